"""`tollgate db upgrade`: run the Alembic migrations in migrations/ against an engine."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine


class SchemaOutOfDate(RuntimeError):
    """The database is not at the schema this version of Tollgate needs."""


def migrations_dir() -> Path:
    """migrations/ beside the package in a checkout, or shipped inside it when installed."""
    package = Path(__file__).resolve().parent.parent
    for candidate in (package.parent / "migrations", package / "migrations"):
        if (candidate / "env.py").exists():
            return candidate
    raise FileNotFoundError("the migrations directory is missing from this installation")


def _config(engine: Engine) -> AlembicConfig:
    config = AlembicConfig()
    config.set_main_option("script_location", str(migrations_dir()))
    config.attributes["engine"] = engine
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    command.upgrade(_config(engine), revision)


def downgrade(engine: Engine, revision: str) -> None:
    command.downgrade(_config(engine), revision)


def check_current(engine: Engine) -> None:
    """Refuse to start on a shared database `tollgate db upgrade` has not brought up to date."""
    head = ScriptDirectory.from_config(_config(engine)).get_current_head()
    with engine.connect() as conn:
        current = MigrationContext.configure(conn).get_current_revision()
    if current != head:
        raise SchemaOutOfDate(
            f"database schema is at {current or 'nothing'}, this version needs {head}: "
            f"run `tollgate db upgrade` (database: {engine.url.render_as_string()})"
        )
