"""Spend in the current window from the budget counters, shared by `tollgate spend` and
/admin/spend."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import field_validator

from gateway.accounting.ledger import Ledger
from gateway.accounting.pricing import usd
from gateway.accounting.spend import SPEND_DIMENSIONS
from gateway.accounting.windows import WINDOW_KINDS, WindowKind, window_at
from gateway.admin.inputs import Input


class SpendQuery(Input):
    group_by: Literal["team", "key", "model"] = "team"
    window: WindowKind = "day"
    at: float | None = None

    @field_validator("window")
    @classmethod
    def _spend_window(cls, value: str) -> str:
        if value == "minute":
            raise ValueError(f"window must be one of {', '.join(WINDOW_KINDS[1:])}")
        return value


async def spend_report(ledger: Ledger, query: SpendQuery) -> dict[str, Any]:
    assert query.group_by in SPEND_DIMENSIONS
    window = window_at(query.window, ledger.clock() if query.at is None else query.at, ledger.zone)
    rows = await ledger.spend(query.group_by, query.window, query.at)
    out = [
        {
            query.group_by: value,
            "usd": str(usd(figures["usd"])),
            "input_tokens": figures["in"],
            "output_tokens": figures["out"],
            "requests": figures["req"],
        }
        for value, figures in sorted(rows.items(), key=lambda kv: -kv[1]["usd"])
    ]
    total = {name: sum(f[name] for f in rows.values()) for name in ("usd", "in", "out", "req")}
    return {
        "group_by": query.group_by,
        "window": {"kind": window.kind, "start": window.start, "end": window.end},
        "timezone": ledger.zone.key,
        "rows": out,
        "total": {
            "usd": str(usd(total["usd"])),
            "input_tokens": total["in"],
            "output_tokens": total["out"],
            "requests": total["req"],
        },
    }
