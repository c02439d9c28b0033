"""Everything the budget and rate-limit policy needs, handed over when a runtime is built."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

from gateway.accounting.alerts import AlertWatch
from gateway.accounting.ledger import Ledger
from gateway.accounting.limits import RateRule
from gateway.accounting.overhead import PromptOverhead
from gateway.accounting.pricing import PriceTable
from gateway.budget_rules import BudgetRule
from gateway.call import Route, Target


@dataclass(frozen=True, slots=True)
class LimitsContext:
    ledger: Ledger
    prices: PriceTable
    budgets: tuple[BudgetRule, ...]  # declared in YAML
    rates: tuple[RateRule, ...]
    sql_budgets: Callable[[], tuple[BudgetRule, ...]]  # set at run time, refreshed in background
    zone: ZoneInfo
    # Every replica a call's plan may reach (alias, a policy's route): budgets reserve at the
    # dearest of them.
    reach: Callable[[str, Route | None], tuple[Target, ...]]
    default_max_tokens: int
    budget_status: int
    prompt_margin: float = 0.0
    overhead: PromptOverhead = field(default_factory=PromptOverhead)
    overhead_prior: int = 0
    # Budget alerts: thresholds for budgets without their own, and what watches for them.
    default_alert_at: tuple[int, ...] = ()
    alerts: AlertWatch | None = None
