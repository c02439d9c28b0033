"""Before serving: the database reachable and current, the counters shareable by the workers
asked for; any problem exits 2 with its reason before a socket is opened."""

from __future__ import annotations

import os
import sys

from gateway.cli.helpers import fail
from gateway.config.schema import Config


def check_state(config: Config, workers: int, config_path: str | None) -> None:
    """Before serving: the database is reachable and current, and the counters can be shared by
    the workers asked for. Any problem exits 2 with the reason, before a socket is opened.

    A schema that needs migrating is migrated by a child `tollgate db upgrade`, so Alembic
    (~10 MB: docs/benchmarks.md, peak RSS) is never loaded into the serving process."""
    from sqlalchemy.exc import SQLAlchemyError

    from gateway.stores.migrate import SCHEMA_HEAD, SchemaOutOfDate, check_current
    from gateway.stores.migrate import current_revision as revision_of
    from gateway.stores.sql import make_engine

    url = os.environ.get("TOLLGATE_DATABASE_URL") or config.database.url
    auto = config.database.auto_upgrade
    try:
        engine = make_engine(url)
        try:
            if revision_of(engine) != SCHEMA_HEAD:
                if auto if auto is not None else engine.dialect.name == "sqlite":
                    _upgrade_in_child(config_path)
                check_current(engine)
        finally:
            engine.dispose()
    except SchemaOutOfDate as exc:
        fail(str(exc))
    except SQLAlchemyError as exc:
        fail(f"cannot use the database: {type(exc).__name__}: {str(exc).splitlines()[0]}")
    limits = config.limits
    if workers > 1 and limits.store == "memory" and (limits.budgets or limits.rate_limits):
        fail(
            f"limits.store is 'memory', which each of the {workers} workers would hold "
            "separately, letting them spend the budgets several times over: use store: redis"
        )


def _upgrade_in_child(config_path: str | None) -> None:
    import subprocess

    command = [sys.executable, "-m", "gateway", "db", "upgrade"]
    if config_path is not None:
        command += ["--config", config_path]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        fail(f"migrating the database failed:\n{done.stderr.strip()}")
