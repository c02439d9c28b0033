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
from gateway.admin_ops import BudgetSet, KeyCreate, SpendQuery, budget_report, new_key, spend_report
from gateway.config.loader import load_config
from gateway.config.schema import Config
from gateway.errors import ConfigError
from gateway.stores import persist
from gateway.stores.budgets import BUDGET_WINDOWS, delete_budget, list_budgets
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

        loaded = load_or_exit(Settings(config_path=config_path).resolved_config_path())
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


def load_or_exit(path: str) -> Any:
    try:
        return load_config(path)
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


def _csv(value: str | None) -> tuple[str, ...] | None:
    return tuple(v.strip() for v in value.split(",") if v.strip()) if value is not None else None


def register(main: click.Group) -> None:
    main.add_command(db)
    main.add_command(keys)
    main.add_command(budgets)
    main.add_command(spend)


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
        row, secret = new_key(admin.engine(), admin.secret(), spec)
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


@click.group()
def budgets() -> None:
    """Budgets set at run time (YAML budgets are listed too)."""


@budgets.command("set")
@config_option
@click.argument("name")
@click.option("--scope", required=True, type=click.Choice(["global", "org", "team", "user", "key"]))
@click.option("--subject", help="Which org/team/user/key; '*' for each separately.")
@click.option("--usd", help="USD per window, e.g. 250 or 12.50.")
@click.option("--tokens", type=int)
@click.option("--window", type=click.Choice(BUDGET_WINDOWS), default="month", show_default=True)
@click.option("--soft", is_flag=True, help="Alert and let policies downgrade instead of denying.")
def budgets_set(
    config_path: str | None,
    name: str,
    scope: str,
    subject: str | None,
    usd: str | None,
    tokens: int | None,
    window: str,
    soft: bool,
) -> None:
    """Create or replace budget NAME."""
    from gateway.stores.budgets import set_budget

    admin = Admin.load(config_path)
    spec = validated(
        BudgetSet,
        name=name,
        scope=scope,
        subject=subject,
        usd=usd,
        tokens=tokens,
        window=window,
        enforcement="soft" if soft else "hard",
    )
    if any(b.name == name for b in admin.config.limits.budgets):
        fail(f"budget {name!r} is declared in the YAML config; change it there")
    set_budget(admin.engine(), spec.rule())
    click.echo(f"budget {name} set")


@budgets.command("list")
@config_option
@json_option
def budgets_list(config_path: str | None, as_json: bool) -> None:
    """Every budget: YAML-declared and set at run time."""
    rows = [r.public() for r in _all_budgets(Admin.load(config_path))]
    show(rows, as_json, lambda: "\n".join(_budget_line(r) for r in rows) or "no budgets")


@budgets.command("show")
@config_option
@json_option
@click.argument("name")
@click.option("--for", "value", help="The subject to show usage for, when the budget is '*'.")
def budgets_show(config_path: str | None, as_json: bool, name: str, value: str | None) -> None:
    """A budget and what its current window has used."""
    admin = Admin.load(config_path)
    rule = next((b for b in _all_budgets(admin) if b.name == name), None)
    if rule is None:
        fail(f"no budget named {name!r}")

    async def report() -> dict[str, Any]:
        ledger = await admin.ledger()
        try:
            return await budget_report(ledger, rule, value)
        finally:
            await ledger.aclose()

    data = asyncio.run(report())
    show(data, as_json, lambda: orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())


@budgets.command("delete")
@config_option
@click.argument("name")
def budgets_delete(config_path: str | None, name: str) -> None:
    """Remove a run-time budget."""
    if not delete_budget(Admin.load(config_path).engine(), name):
        fail(f"no run-time budget named {name!r}")
    click.echo(f"budget {name} deleted")


def _all_budgets(admin: Admin) -> list[Any]:
    from gateway.config.runtime import yaml_budgets

    declared = yaml_budgets(admin.config)
    names = {b.name for b in declared}
    return [*declared, *(b for b in list_budgets(admin.engine()) if b.name not in names)]


def _budget_line(r: dict[str, Any]) -> str:
    amount = " ".join(
        part
        for part in (
            f"${r['usd']}" if r["usd"] else "",
            f"{r['tokens']} tokens" if r["tokens"] else "",
        )
        if part
    )
    who = r["scope"] + (f" {r['subject']}" if r["subject"] else "")
    return (
        f"{r['name']:20} {who:24} {amount:28} per {r['window']:6} {r['enforcement']} "
        f"({r['source']})"
    )


@click.command()
@config_option
@json_option
@click.option("--group-by", type=click.Choice(["team", "key", "model"]), default="team")
@click.option(
    "--window", type=click.Choice(["hour", "day", "week", "month", "total"]), default="day"
)
def spend(config_path: str | None, as_json: bool, group_by: str, window: str) -> None:
    """Spend in the current window, from the same counters the budgets use."""
    admin = Admin.load(config_path)
    query = validated(SpendQuery, group_by=group_by, window=window)

    async def report() -> dict[str, Any]:
        ledger = await admin.ledger()
        try:
            return await spend_report(ledger, query)
        finally:
            await ledger.aclose()

    data = asyncio.run(report())

    def text() -> str:
        lines = [f"{group_by.upper():24} {'USD':>14} {'IN':>10} {'OUT':>10} {'REQ':>8}"]
        for row in [*data["rows"], {group_by: "TOTAL", **data["total"]}]:
            lines.append(
                f"{row[group_by]:24} {row['usd']:>14} {row['input_tokens']:>10} "
                f"{row['output_tokens']:>10} {row['requests']:>8}"
            )
        return "\n".join(lines)

    show(data, as_json, text)
