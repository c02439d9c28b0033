"""Budget and rate-limit rules, and what one call must reserve against them.

Pure planning: given a call's principal, model and worst-case size, which counters does it
touch and by how much. `ledger.py` takes these plans to the counter store.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal
from zoneinfo import ZoneInfo

from gateway.accounting.pricing import usd
from gateway.accounting.windows import Window, WindowCache, window_at
from gateway.budget_rules import BudgetRule
from gateway.call import Principal
from gateway.stores.counters import Charge

Unit = Literal["usd", "tokens", "requests"]
RateScope = Literal["global", "org", "team", "user", "key", "model"]
_KEEP_AFTER_WINDOW_S = 3600
_RATE_TTL_S = 120


@dataclass(frozen=True, slots=True)
class RateRule:
    """Requests and/or tokens per calendar minute for one principal level or model."""

    name: str
    scope: RateScope
    subject: str | None
    model: str | None
    rpm: int | None
    tpm: int | None


@dataclass(frozen=True, slots=True)
class Line:
    """One counter a call charges, with what the client is told if it does not fit."""

    charge: Charge
    unit: Unit
    kind: Literal["budget", "rate"]
    rule: str
    subject: str
    window: Window
    hard: bool
    limit: int | None  # the rule's limit, also for soft budgets (whose charge has none)
    # The spend tally that says what this budget's subject spent in the window before the
    # budget existed: (dimension, value), for a counter seen for the first time.
    seed: tuple[str, str] | None = None
    # A budget's alert thresholds (percent of `limit`) and the webhooks they go to.
    alert_at: tuple[int, ...] = ()
    notify: tuple[str, ...] | None = None

    def describe(self, zone: ZoneInfo, current: int, now: float) -> str:
        what = f"{self.kind} '{self.rule}' ({self.subject})"
        if self.kind == "rate":
            per = "requests" if self.unit == "requests" else "tokens"
            return (
                f"Rate limit reached: {what} allows {self.limit} {per} per minute; "
                f"retry in {self.window.seconds_left(now)}s."
            )
        limit = self.limit or 0
        left = max(limit - current, 0)
        if self.unit == "usd":
            spent = f"${usd(current):.6f} of ${usd(limit):.6f} spent"
            remaining = f"${usd(left):.6f} left"
            ask = f"this call may cost up to ${usd(self.charge.amount):.6f}"
        else:
            spent = f"{current} of {limit} tokens used"
            remaining = f"{left} tokens left"
            ask = f"this call may use up to {self.charge.amount} tokens"
        window = self.window.describe(zone)
        if left > 0:
            # Smaller calls still fit: say so, rather than call the budget exhausted.
            return (
                f"Budget too low for this call: {what}, {window}: {spent}, {remaining}; {ask} "
                "(its prompt plus max_tokens at the dearest tier it may use). A smaller "
                "max_tokens or prompt may fit."
            )
        return f"Budget exhausted: {what}, {window}: {spent}; {ask}."


@dataclass(frozen=True, slots=True)
class Ask:
    """A call's worst case: what is reserved before it is forwarded (`prompt`: the prompt
    tokens reserved, margin included, before any target's template overhead)."""

    usd_nanos: int
    tokens: int
    prompt: int = 0


def _subject_value(scope: str, principal: Principal, model: str) -> str | None:
    if scope == "global":
        return "all"
    if scope == "key":
        return principal.name
    if scope == "model":
        return model
    value: str | None = getattr(principal, scope)
    return value


def _applies(subject: str | None, value: str | None) -> bool:
    return value is not None and (subject in (None, "*") or subject == value)


class Planner:
    """Turns rules into the counters a call charges; rules are fixed per runtime."""

    def __init__(
        self,
        budgets: Sequence[BudgetRule],
        rates: Sequence[RateRule],
        zone: ZoneInfo,
        clock: Callable[[], float],
        default_alert_at: tuple[int, ...] = (),
    ) -> None:
        self.default_alert_at = default_alert_at
        self.budgets = tuple(budgets)
        self.rates = tuple(rates)
        self.zone = zone
        self.clock = clock
        self._windows = WindowCache(zone)

    def __bool__(self) -> bool:
        return bool(self.budgets or self.rates)

    def lines(self, principal: Principal, model: str, ask: Ask) -> list[Line]:
        now = self.clock()
        out: list[Line] = []
        for rule in self.budgets:
            value = _subject_value(rule.scope, principal, model)
            if value is not None and _applies(rule.subject, value):
                label = _label(rule.scope, value, principal)
                seed = ("all", "all") if rule.scope == "global" else (rule.scope, value)
                out.extend(self._budget_lines(rule, label, ask, now, seed))
        for rate in self.rates:
            value = _subject_value(rate.scope, principal, model)
            if value is not None and _applies(rate.subject, value) and rate.model in (None, model):
                label = _label(rate.scope, value, principal)
                out.extend(self._rate_lines(rate, label, model, ask, now))
        return out

    def _budget_lines(
        self, rule: BudgetRule, subject: str, ask: Ask, now: float, seed: tuple[str, str]
    ) -> list[Line]:
        window = self._windows.at(rule.window, now)
        base = budget_stem(rule, subject, window)
        ttl = _ttl(window, now)
        hard = rule.enforcement == "hard"
        alert_at = rule.alert_at if rule.alert_at is not None else self.default_alert_at
        out = []
        pairs: tuple[tuple[Unit, int | None, int], ...] = (
            ("usd", rule.usd_nanos, ask.usd_nanos),
            ("tokens", rule.tokens, ask.tokens),
        )
        for unit, limit, amount in pairs:
            if limit is not None:
                # A soft budget counts without refusing: its charge carries no limit.
                charge = Charge(f"{base}:{unit}", amount, limit if hard else None, ttl)
                line = Line(charge, unit, "budget", rule.name, subject, window, hard, limit, seed,
                            alert_at, rule.notify)  # fmt: skip
                out.append(line)
        return out

    def _rate_lines(
        self, rate: RateRule, subject: str, model: str, ask: Ask, now: float
    ) -> list[Line]:
        window = self._windows.at("minute", now)
        base = f"r:{rate.name}:{subject}:{model if rate.model else '-'}:{window.start}"
        out = []
        pairs: tuple[tuple[Unit, int | None, int], ...] = (
            ("requests", rate.rpm, 1),
            ("tokens", rate.tpm, ask.tokens),
        )
        for unit, limit, amount in pairs:
            if limit is not None:
                charge = Charge(f"{base}:{unit}", amount, limit, _RATE_TTL_S)
                out.append(Line(charge, unit, "rate", rate.name, subject, window, True, limit))
        return out


def budget_subject(rule: BudgetRule, principal: Principal, model: str) -> str | None:
    """The subject a call is counted under for `rule` (as its counters name it), or None if
    the budget does not apply to this caller."""
    value = _subject_value(rule.scope, principal, model)
    if value is None or not _applies(rule.subject, value):
        return None
    return _label(rule.scope, value, principal)


def budget_counter(
    rule: BudgetRule, subject: str, now: float, zone: ZoneInfo
) -> tuple[Window, str]:
    """The window a budget is in at `now`, and its counters' key stem (+ ":usd" / ":tokens")."""
    window = window_at(rule.window, now, zone)
    return window, budget_stem(rule, subject, window)


def budget_stem(rule: BudgetRule, subject: str, window: Window) -> str:
    """The one place a budget counter's key is spelled (planning and reporting share it)."""
    return f"b:{rule.name}:{subject}:{window.tag}"


def subject_label(scope: str, value: str, key_id: str | None = None) -> str:
    """How a budget's subject is named in its counters and messages. A key is matched by name
    but counted by id (`key alice (key_1f..)`): a key that takes a retired key's name, or a
    static key's, never inherits its counters."""
    if scope == "key" and key_id is not None:
        return f"key {value} ({key_id})"
    return f"{scope} {value}"


def _label(scope: str, value: str, principal: Principal) -> str:
    return subject_label(scope, value, principal.key_id if scope == "key" else None)


def _ttl(window: Window, now: float) -> int:
    if window.end is None:
        return 0
    return int(window.end - now) + _KEEP_AFTER_WINDOW_S
