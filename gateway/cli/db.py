"""`tollgate db`: the database schema (Alembic migrations), on the same SQL database as the
gateways (TOLLGATE_DATABASE_URL overrides the config's database.url)."""

from __future__ import annotations

import click
from sqlalchemy import Engine

from gateway.cli.helpers import Admin, config_option
from gateway.stores.migrate import downgrade, upgrade


@click.group()
def db() -> None:
    """Database schema (Alembic migrations)."""


@db.command("upgrade")
@config_option
@click.option("--revision", default="head", show_default=True)
def db_upgrade(config_path: str | None, revision: str) -> None:
    """Bring the database schema up to REVISION."""
    admin = Admin.load(config_path)
    upgrade(_raw_engine(admin), revision)
    click.echo(f"database at {revision}")


@db.command("downgrade")
@config_option
@click.argument("revision")
def db_downgrade(config_path: str | None, revision: str) -> None:
    """Take the schema back to REVISION ("base" removes every Tollgate table)."""
    admin = Admin.load(config_path)
    downgrade(_raw_engine(admin), revision)
    click.echo(f"database at {revision}")


def _raw_engine(admin: Admin) -> Engine:
    from gateway.stores.sql import make_engine

    return make_engine(admin.url)
