"""Spend in the current window from the budget counters, shared by `tollgate spend` and
/admin/spend."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import field_validator

from gateway.accounting.ledger import Ledger
from gateway.accounting.pricing import usd
from gateway.accounting.spend import SPEND_DIMENSIONS
from gateway.accounting.windows import WINDOW_KINDS, Window, WindowKind, window_at
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


@dataclass(frozen=True, slots=True)
class SpendFigures:
    """What one group (or the total) spent; money in nano-USD until it is displayed."""

    usd_nanos: int
    input_tokens: int
    output_tokens: int
    requests: int

    def public(self) -> dict[str, Any]:
        return {"usd": str(usd(self.usd_nanos)), "input_tokens": self.input_tokens,
                "output_tokens": self.output_tokens, "requests": self.requests}  # fmt: skip


@dataclass(frozen=True, slots=True)
class SpendReport:
    group_by: str
    window: Window
    timezone: str
    rows: tuple[tuple[str, SpendFigures], ...]  # (the group's value, its figures), costliest first
    total: SpendFigures

    def public(self) -> dict[str, Any]:
        """The JSON of `tollgate spend --json` and GET /admin/spend."""
        return {
            "group_by": self.group_by,
            "window": window_public(self.window),
            "timezone": self.timezone,
            "rows": [{self.group_by: value, **f.public()} for value, f in self.rows],
            "total": self.total.public(),
        }


def window_public(window: Window) -> dict[str, Any]:
    return {"kind": window.kind, "start": window.start, "end": window.end}


async def spend_report(ledger: Ledger, query: SpendQuery) -> SpendReport:
    assert query.group_by in SPEND_DIMENSIONS
    window = window_at(query.window, ledger.clock() if query.at is None else query.at, ledger.zone)
    rows = await ledger.spend(query.group_by, query.window, query.at)

    def figures(f: Mapping[str, int]) -> SpendFigures:
        return SpendFigures(f["usd"], f["in"], f["out"], f["req"])

    total = {name: sum(f[name] for f in rows.values()) for name in ("usd", "in", "out", "req")}
    ordered = sorted(rows.items(), key=lambda kv: -kv[1]["usd"])
    grouped = tuple((value, figures(f)) for value, f in ordered)
    return SpendReport(query.group_by, window, ledger.zone.key, grouped, figures(total))
