"""`tollgate budgets|spend`: run-time budgets in SQL, and spend from the budget counters."""

from __future__ import annotations

import os
from typing import Any

import click
import orjson

from gateway.admin.budgets import (
    BUDGET_WINDOWS,
    BudgetSet,
    budget_report,
    delete_budget,
    list_budgets,
    set_budget,
)
from gateway.admin.keys import key_ids
from gateway.admin.spend import SpendQuery, spend_report
from gateway.cli.helpers import Admin, config_option, fail, json_option, show, validated


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
    set_budget(admin.engine(), spec.stored())
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

    ids = key_ids(admin.config, admin.engine(), os.environ)

    data = admin.with_ledger(lambda ledger: budget_report(ledger, rule, value, ids)).public()
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

    declared = admin.config.limits.budget_rules()
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

    data = admin.with_ledger(lambda ledger: spend_report(ledger, query)).public()

    def text() -> str:
        lines = [f"{group_by.upper():24} {'USD':>14} {'IN':>10} {'OUT':>10} {'REQ':>8}"]
        for row in [*data["rows"], {group_by: "TOTAL", **data["total"]}]:
            lines.append(
                f"{row[group_by]:24} {row['usd']:>14} {row['input_tokens']:>10} "
                f"{row['output_tokens']:>10} {row['requests']:>8}"
            )
        return "\n".join(lines)

    show(data, as_json, text)
