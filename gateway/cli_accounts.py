"""`tollgate db|keys|budgets|spend`: the admin commands, working on the same SQL database and
counter store as the gateways (TOLLGATE_DATABASE_URL overrides the config's database.url)."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn, TypeVar
from zoneinfo import ZoneInfo

import click
import orjson
from pydantic import BaseModel, ValidationError
from sqlalchemy import Engine

from gateway.accounting.ledger import Ledger
from gateway.admin_ops import KeyCreate, new_key
from gateway.config.loader import load_config
from gateway.config.schema import Config
from gateway.errors import ConfigError
from gateway.stores import persist
from gateway.stores.keys import KeyError_, list_keys, revoke_key
from gateway.stores.memory import MemoryCounters
from gateway.stores.migrate import downgrade, upgrade
from gateway.stores.secret import data_dir_of, server_secret

M = TypeVar("M", bound=BaseModel)
config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="tollgate.yaml (for database, keys and limits); default: the embedded one.",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


@dataclass
class Admin:
    config: Config
    url: str

    @classmethod
    def load(cls, config_path: str | None) -> Admin:
        from gateway.settings import Settings

        # Admin commands need the database and limits, not every upstream's secret.
        loaded = load_or_exit(
            Settings(config_path=config_path).resolved_config_path(), check_env=False
        )
        config: Config = loaded.config
        return cls(config, os.environ.get("TOLLGATE_DATABASE_URL") or config.database.url)

    def engine(self) -> Engine:
        from gateway.services import prepare_database
        from gateway.stores.migrate import SchemaOutOfDate

        try:
            return prepare_database(self.url, self.config.database.auto_upgrade)
        except SchemaOutOfDate as exc:
            fail(str(exc))

    def secret(self) -> bytes:
        return server_secret(self.config.keys.secret_env, data_dir_of(self.url))

    async def ledger(self) -> Ledger:
        from gateway.services import counter_store

        limits = self.config.limits
        store = counter_store(limits)
        if isinstance(store, MemoryCounters):
            await asyncio.to_thread(persist.load, self.engine(), store)
        return Ledger(store, limits.on_store_failure, ZoneInfo(limits.timezone))


def load_or_exit(path: str, *, check_env: bool = True) -> Any:
    try:
        return load_config(path, check_env=check_env)
    except ConfigError as exc:
        click.echo(
            f"invalid configuration ({len(exc.problems)} problem"
            f"{'s' if len(exc.problems) != 1 else ''}):",
            err=True,
        )
        for problem in exc.problems:
            click.echo(f"  {problem}", err=True)
        sys.exit(2)


def check_state(config: Config, workers: int, config_path: str | None) -> None:
    """Before serving: the database is reachable and current, and the counters can be shared by
    the workers asked for. Any problem exits 2 with the reason, before a socket is opened.

    A schema that needs migrating is migrated by a child `tollgate db upgrade`, so Alembic
    (~10 MB) is never loaded into the serving process."""
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


def fail(message: str) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(2)


def validated(model: type[M], **fields: Any) -> M:
    try:
        return model.model_validate({k: v for k, v in fields.items() if v is not None})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'input'}: {e['msg']}" for e in exc.errors()
        )
        fail(problems)


def show(data: Any, as_json: bool, text: Callable[[], str]) -> None:
    click.echo(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() if as_json else text())


def _csv(value: str | None) -> tuple[str, ...] | None:
    return tuple(v.strip() for v in value.split(",") if v.strip()) if value is not None else None


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


@click.group()
def keys() -> None:
    """Virtual API keys."""


@keys.command("create")
@config_option
@json_option
@click.option("--name", required=True)
@click.option("--team")
@click.option("--user")
@click.option("--org")
@click.option("--tags", help="Comma-separated.")
@click.option("--models", help="Comma-separated model aliases this key may use (default: all).")
@click.option("--expires", help="ISO 8601 time with zone, or a duration: 30d, 12h, 90m.")
def keys_create(
    config_path: str | None,
    as_json: bool,
    name: str,
    team: str | None,
    user: str | None,
    org: str | None,
    tags: str | None,
    models: str | None,
    expires: str | None,
) -> None:
    """Create a key and print its secret (shown this once only)."""
    admin = Admin.load(config_path)
    spec = validated(
        KeyCreate,
        name=name,
        team=team,
        user=user,
        org=org,
        tags=_csv(tags),
        models=_csv(models),
        expires=expires,
    )
    unknown = [m for m in spec.models or () if m not in admin.config.models]
    if unknown:
        fail(f"unknown model(s): {', '.join(unknown)} (models: {', '.join(admin.config.models)})")
    try:
        row, secret = new_key(admin.engine(), admin.secret(), spec, admin.config)
    except KeyError_ as exc:
        fail(str(exc.args[0]))
    show(
        {**row.public(), "key": secret},
        as_json,
        lambda: f"{secret}\n(key {row.id} '{row.name}': store the secret now, it is not kept)",
    )


@keys.command("list")
@config_option
@json_option
@click.option("--active", is_flag=True, help="Hide revoked keys.")
def keys_list(config_path: str | None, as_json: bool, active: bool) -> None:
    """List keys (never their secrets)."""
    rows = list_keys(Admin.load(config_path).engine(), include_revoked=not active)
    now = time.time()

    def text() -> str:
        lines = [f"{'ID':22} {'NAME':20} {'TEAM':12} {'USER':12} {'PREFIX':11} STATUS"]
        for r in rows:
            status = (
                "revoked"
                if r.revoked_at
                else "expired"
                if r.expires_at and r.expires_at <= now
                else "active"
            )
            lines.append(
                f"{r.id:22} {r.name:20} {r.team or '-':12} {r.user or '-':12} "
                f"{r.prefix:11} {status}"
            )
        return "\n".join(lines)

    show([r.public() for r in rows], as_json, text)


@keys.command("revoke")
@config_option
@click.argument("key")
def keys_revoke(config_path: str | None, key: str) -> None:
    """Revoke KEY (id or name); every gateway refuses it within keys.refresh_seconds."""
    try:
        row = revoke_key(Admin.load(config_path).engine(), key)
    except KeyError_ as exc:
        fail(str(exc.args[0]))
    click.echo(f"revoked {row.id} '{row.name}'")
