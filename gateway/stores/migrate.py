"""`tollgate db upgrade`: run the Alembic migrations in migrations/ against an engine.

Alembic is imported only when a migration has to run: a gateway starting on an up-to-date
schema reads one row and moves on (Alembic and Mako would add ~10 MB to every process:
docs/benchmarks.md, peak RSS).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Engine, MetaData, inspect, text

from gateway.errors import Fault

if TYPE_CHECKING:
    from alembic.config import Config as AlembicConfig

# The newest revision in migrations/versions (a test keeps the two in step).
SCHEMA_HEAD = "0009"


class SchemaOutOfDate(Fault):
    """The database is not at the schema this version of Tollgate needs."""


def migrations_dir() -> Path:
    """migrations/ beside the package in a checkout, or inside it (`_migrations`) when installed
    from a wheel."""
    package = Path(__file__).resolve().parent.parent
    for candidate in (package.parent / "migrations", package / "_migrations"):
        if (candidate / "env.py").exists():
            return candidate
    raise FileNotFoundError("the migrations directory is missing from this installation")


def _config(engine: Engine) -> AlembicConfig:
    from alembic.config import Config as AlembicConfig

    config = AlembicConfig()
    config.set_main_option("script_location", str(migrations_dir()))
    config.attributes["engine"] = engine
    return config


def env_metadata() -> MetaData:
    """The metadata migrations/env.py hands Alembic: every table module imported."""
    import importlib

    importlib.import_module("gateway.audit.tables")
    importlib.import_module("gateway.telemetry.tables")
    from gateway.stores.sql import metadata

    return metadata


def upgrade(engine: Engine, revision: str = "head") -> None:
    from alembic import command

    command.upgrade(_config(engine), revision)


def downgrade(engine: Engine, revision: str) -> None:
    from alembic import command

    command.downgrade(_config(engine), revision)


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        if not inspect(conn).has_table("alembic_version"):
            return None
        value = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    return str(value) if value is not None else None


def check_current(engine: Engine) -> None:
    """Refuse to start on a shared database `tollgate db upgrade` has not brought up to date."""
    current = current_revision(engine)
    if current != SCHEMA_HEAD:
        raise SchemaOutOfDate(
            f"database schema is at {current or 'nothing'}, this version needs {SCHEMA_HEAD}: "
            f"run `tollgate db upgrade` (database: {engine.url.render_as_string()})"
        )


def head_revision() -> str:
    """What migrations/ says the newest revision is (for the test that pins SCHEMA_HEAD)."""
    from alembic.script import ScriptDirectory

    from gateway.stores.sql import make_engine

    engine = make_engine("sqlite:///:memory:")
    head = ScriptDirectory.from_config(_config(engine)).get_current_head()
    engine.dispose()
    return str(head)
