"""What a budget is: a spending limit on one principal level, in USD and/or tokens, per
calendar window, hard or soft. The same rule whether it was declared in YAML or set at run time
(stores/budgets.py keeps those in SQL); the ledger and the budgets policy enforce it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Scope = Literal["global", "org", "team", "user", "key"]
BudgetWindow = Literal["hour", "day", "week", "month", "total"]
BUDGET_WINDOWS: tuple[BudgetWindow, ...] = ("hour", "day", "week", "month", "total")


@dataclass(frozen=True, slots=True)
class BudgetRule:
    """A spending limit on one principal level. `subject` names the org/team/user/key it
    applies to, or "*" for each of them separately; None for `global`."""

    name: str
    scope: Scope
    subject: str | None
    usd_nanos: int | None
    tokens: int | None
    window: BudgetWindow
    enforcement: Literal["hard", "soft"]
    source: str = "sql"
    # Percentages of the limit that alert once per window (None: the configured default), and
    # the webhooks they go to (None: every webhook).
    alert_at: tuple[int, ...] | None = None
    notify: tuple[str, ...] | None = None

    def public(self) -> dict[str, object]:
        from decimal import Decimal

        return {
            "name": self.name,
            "scope": self.scope,
            "subject": self.subject,
            "usd": str(Decimal(self.usd_nanos) / 10**9) if self.usd_nanos is not None else None,
            "tokens": self.tokens,
            "window": self.window,
            "enforcement": self.enforcement,
            "source": self.source,
            "alert_at": list(self.alert_at) if self.alert_at is not None else None,
        }
