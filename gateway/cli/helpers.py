"""What the command groups share: the --config and --json options, loading a config or
exiting with its problems, the admin's view of the database and counters, and printing."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, NoReturn, TypeVar
from zoneinfo import ZoneInfo

import click
import orjson
from pydantic import BaseModel, ValidationError
from sqlalchemy import Engine

from gateway.accounting.ledger import Ledger
from gateway.config.fleet import missing_secret
from gateway.config.loader import load_config
from gateway.config.schema import Config
from gateway.errors import ConfigError
from gateway.stores import persist
from gateway.stores.memory import MemoryCounters
from gateway.stores.secret import data_dir_of, server_secret

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")
config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    default=None,
    envvar="TOLLGATE_CONFIG",
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
        self.require_fleet_secret()
        return server_secret(self.config.keys.secret_env, data_dir_of(self.url))

    def require_fleet_secret(self) -> None:
        """On shared state, the fleet's secret must be set here: a key made with a secret of
        this machine's own would be refused by every gateway, and rows they signed would look
        forged."""
        why = missing_secret(self.config, os.environ)
        if why is not None:
            fail(why)

    def with_ledger(self, work: Callable[[Ledger], Awaitable[T]]) -> T:
        """Runs `work` against the counters the gateways use, then closes them."""

        async def run() -> T:
            ledger = await self.ledger()
            try:
                return await work(ledger)
            finally:
                await ledger.aclose()

        return asyncio.run(run())

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


def csv_list(value: str | None) -> tuple[str, ...] | None:
    return tuple(v.strip() for v in value.split(",") if v.strip()) if value is not None else None
