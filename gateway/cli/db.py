"""`tollgate db`: the database schema (Alembic migrations), on the same SQL database as the
gateways (TOLLGATE_DATABASE_URL overrides the config's database.url)."""

from __future__ import annotations

import sys

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


@db.command("status")
@config_option
def db_status(config_path: str | None) -> None:
    """Say whether the schema is the one this version needs; exit 1 if not (a Kubernetes init
    container waits on it while the migration Job runs)."""
    from gateway.stores.migrate import SCHEMA_HEAD, current_revision

    admin = Admin.load(config_path)
    engine = _raw_engine(admin)
    try:
        current = current_revision(engine)
    finally:
        engine.dispose()
    if current != SCHEMA_HEAD:
        click.echo(f"database at {current or 'no schema'}; this version needs {SCHEMA_HEAD}: "
                   "run `tollgate db upgrade`", err=True)  # fmt: skip
        sys.exit(1)
    click.echo(f"database at {current} (current)")


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
