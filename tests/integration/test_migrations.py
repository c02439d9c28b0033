"""Alembic migrations up and down on SQLite and a fresh PostgreSQL database."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import inspect

from gateway.audit import tables as audit_tables
from gateway.stores.migrate import (
    SCHEMA_HEAD,
    SchemaOutOfDate,
    check_current,
    downgrade,
    head_revision,
    upgrade,
)
from gateway.stores.sql import make_engine, metadata
from tests.support.services import postgres_database


@contextlib.contextmanager
def database(kind: str, tmp_path: Path) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite:///{tmp_path}/m.db"
    else:
        with postgres_database() as url:
            yield url


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_upgrade_downgrade_upgrade(kind: str, tmp_path: Path) -> None:
    with database(kind, tmp_path) as url:
        engine = make_engine(url)
        try:
            with pytest.raises(SchemaOutOfDate):
                check_current(engine)
            upgrade(engine)
            check_current(engine)
            tables = set(inspect(engine).get_table_names())
            assert set(metadata.tables) <= tables
            downgrade(engine, "base")
            assert not set(metadata.tables) & set(inspect(engine).get_table_names())
            upgrade(engine)
            for table in ("tollgate_keys", "tollgate_audit_events", "tollgate_audit_decisions"):
                columns = {c["name"] for c in inspect(engine).get_columns(table)}
                assert {c.name for c in metadata.tables[table].columns} == columns
        finally:
            engine.dispose()


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_audit_views_come_and_go_with_their_migration(kind: str, tmp_path: Path) -> None:
    from sqlalchemy import text

    views = {
        "tollgate_audit_requests",
        "tollgate_audit_spend_by_team_day",
        "tollgate_audit_denied",
        "tollgate_audit_policy_overrides",
        "tollgate_audit_cache_savings",
    }
    with database(kind, tmp_path) as url:
        engine = make_engine(url)
        try:
            upgrade(engine)
            assert views <= set(inspect(engine).get_view_names())
            with engine.connect() as conn:
                for view in views:
                    conn.execute(text(f"SELECT * FROM {view}")).all()
            downgrade(engine, "0001")
            audit = {t for t in inspect(engine).get_table_names() if t.startswith("tollgate_audit")}
            assert not audit and not views & set(inspect(engine).get_view_names())
            assert audit_tables.events.name not in inspect(engine).get_table_names()
            assert "tollgate_keys" in inspect(engine).get_table_names()
        finally:
            engine.dispose()


def test_the_code_knows_the_newest_migration() -> None:
    assert head_revision() == SCHEMA_HEAD, "bump SCHEMA_HEAD with every new migration"


def test_migrations_ship_inside_the_package() -> None:
    """`pip install .` (not editable) has no repository beside it: the wheel carries
    migrations/ as gateway/_migrations, and the package data patterns cover every file."""
    import fnmatch
    import tomllib

    root = Path(__file__).resolve().parents[2]
    linked = root / "gateway" / "_migrations"
    assert linked.resolve() == (root / "migrations").resolve()
    patterns = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"
    ]["gateway"]
    shipped = [
        f"_migrations/{p.relative_to(root / 'migrations')}"
        for p in (root / "migrations").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    ]
    missing = [f for f in shipped if not any(fnmatch.fnmatch(f, pat) for pat in patterns)]
    assert not missing, f"not in the wheel: {missing}"


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_the_models_and_the_migrations_describe_the_same_schema(kind: str, tmp_path: Path) -> None:
    """What `alembic check` does: autogenerate against the migrated database finds nothing
    to add, drop or change (env.py sees every table)."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from gateway.stores.migrate import env_metadata

    with database(kind, tmp_path) as url:
        engine = make_engine(url)
        try:
            upgrade(engine)
            with engine.connect() as conn:
                diff = compare_metadata(MigrationContext.configure(conn), env_metadata())
            assert diff == []
        finally:
            engine.dispose()
