"""Budgets and rate limits: reserve the worst case before forwarding, settle after.

Reservation is all-or-nothing across every budget and limit on the caller's path (one Lua script
in shared mode), so 500 concurrent calls cannot together pass a budget: committed spend stays
within the limit plus, at most, what one call's usage exceeds its own estimate by.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Protocol

from gateway.accounting.context import LimitsContext
from gateway.accounting.ledger import Denial, Hold, StoreDown
from gateway.accounting.limits import Ask, Line, Planner
from gateway.accounting.request_size import output_cap
from gateway.accounting.spend import Spent
from gateway.accounting.tokens import prompt_tokens
from gateway.call import Call, Decision, Deny, Outcome, Usage, Verdict
from gateway.errors import InternalError, ServiceUnavailable
from gateway.policies.base import PluginContext, PolicyPlugin
from gateway.policies.limit_headers import rate_headers
from gateway.stores.counters import StoreRejected

_NAME = "budgets"
BATCH = "batch"  # call.state: a batch line's share of its job's reservation (batches/money.py)


class BatchShare(Protocol):
    def settle(self, spent: Spent | None) -> None: ...


log = logging.getLogger("gateway.budgets")


class BudgetGuard(PolicyPlugin):
    """Always in the chain (appended last unless a `use: budgets` entry places it)."""

    name = _NAME

    def __init__(self, options: Any, context: PluginContext) -> None:
        super().__init__(options, context)
        if context.limits is None:
            raise ValueError("the budgets policy needs the limits context")
        self.limits: LimitsContext = context.limits
        self._sql: tuple[object, ...] | None = None
        self._planner = Planner((), (), self.limits.zone, self.limits.ledger.clock)
        self._alerted: set[tuple[str, str, int]] = set()

    def planner(self) -> Planner:
        """YAML rules plus the SQL budgets of the moment (rebuilt only when those change)."""
        sql = self.limits.sql_budgets()
        if sql is not self._sql:
            names = {b.name for b in self.limits.budgets}
            merged = (*self.limits.budgets, *(b for b in sql if b.name not in names))
            self._planner = Planner(
                merged,
                self.limits.rates,
                self.limits.zone,
                self.limits.ledger.clock,
                self.limits.default_alert_at,
            )
            self._sql = sql
        return self._planner

    async def on_request(self, call: Call) -> Verdict | None:
        if BATCH in call.state:
            return None  # a batch line: its job reserved its worst case when it was submitted
        planner = self.planner()
        if not planner:
            return None
        ask = self.ask(call)
        lines = planner.lines(call.principal, call.model, ask)
        if not lines:
            return None
        try:
            result = await self.limits.ledger.reserve(lines)
        except StoreDown as exc:
            raise ServiceUnavailable(
                f"Budgets cannot be checked: {exc} (on_store_failure: closed). Retry shortly.",
                code="budget_store_unavailable",
                headers={"retry-after": "1"},
            ) from exc
        except StoreRejected as exc:
            log.error("the counter store refused this call's reservation: %s", exc)
            raise InternalError(
                "This call's budget reservation could not be made.", code="budget_error"
            ) from exc
        alerts = self.limits.alerts
        if isinstance(result, Denial):
            if alerts is not None:
                alerts.observe((result.line,), (result.current,), own=False)
            return self._deny(result, call)
        if alerts is not None:
            alerts.observe(result.lines, result.values)
        call.state[_NAME] = (result, ask.prompt)
        if result.degraded:
            call.decide(Decision(_NAME, "modify", "budget store down: limits enforced locally"))
        self._note_soft(call, result)
        return None

    async def on_response(self, call: Call, outcome: Outcome) -> None:
        held: tuple[Hold, int] | None = call.state.pop(_NAME, None)
        spent = self._spent(call, outcome)
        line = call.state.get(BATCH)
        if line is not None:
            line.settle(spent)
            return
        if held is not None:
            hold, reserved_prompt = held
            self.limits.ledger.settle(hold, spent)
            usage, target = outcome.usage, outcome.target
            if usage is not None and target is not None and not usage.estimated:
                self.limits.overhead.observe(target, reserved_prompt, usage.input_tokens)
        elif spent is not None:
            self.limits.ledger.record(spent)

    def ask(self, call: Call) -> Ask:
        """The call's worst case on any replica its plan may reach (tiers, fallbacks): its
        prompt as counted, plus the margin and the replica's learnt template overhead; every
        completion it can generate (n, best_of, a prompt array) at its max tokens."""
        limits = self.limits
        body = call.body
        if call.endpoint == "count_tokens":
            return Ask(usd_nanos=0, tokens=0)  # counting costs nothing; rate limits still count it
        prompt = prompt_tokens(call.endpoint, body, self.context.tokens)
        reserved = math.ceil(prompt * (1 + limits.prompt_margin))
        output = output_cap(call.endpoint, body, limits.default_max_tokens) or 0
        targets = limits.reach(call.model, call.route)
        worst, extra = 0, 0
        for target in targets:
            overhead = limits.overhead.tokens(target, limits.overhead_prior)
            extra = max(extra, overhead)
            price = limits.prices.price(target)
            if price is not None:
                worst = max(worst, price.worst_case(reserved + overhead, output))
        return Ask(usd_nanos=worst, tokens=reserved + extra + output, prompt=reserved)

    @staticmethod
    def _spent(call: Call, outcome: Outcome) -> Spent | None:
        """What the call used, at the cost the pipeline put on it (abandoned calls carry their
        prompt as estimated usage by then)."""
        usage = outcome.usage
        failed = outcome.status >= 400 and not outcome.disconnected and not outcome.partial
        if failed and outcome.money.cost:
            usage = Usage()  # failed, but its tries consumed tokens (what resilience cost)
        elif failed:
            return None
        if call.endpoint == "count_tokens":  # free, but a request the rate limits count
            usage = Usage()
        elif outcome.target is None or usage is None:
            return None
        return Spent(
            usd_nanos=outcome.money.cost,
            tokens=usage.total_tokens,
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            team=call.principal.team,
            key=call.principal.name,
            model=call.model,
            user=call.principal.user,
            org=call.principal.org,
        )

    def _deny(self, denial: Denial, call: Call) -> Deny:
        line = denial.line
        now = self.limits.ledger.clock()
        message = line.describe(self.limits.zone, denial.current, now)
        if line.kind == "rate":
            retry = str(line.window.seconds_left(now))
            told = rate_headers(call.dialect, [(line, denial.current)], now)
            return Deny(
                message,
                status=429,
                code="rate_limit_exceeded",
                headers={"retry-after": retry, **dict(told)},
                error_type="requests" if line.unit == "requests" else "tokens",
            )
        self.limits.ledger.book.refused(line.window.tag, line.rule, line.subject)
        # The official SDKs retry 429s three times unless told not to: a budget does not come
        # back within their back-off, so each retry would only be one more denied row.
        headers = {"x-should-retry": "false"}
        if line.window.end is not None:
            headers["x-tollgate-budget-resets"] = str(line.window.end)
        return Deny(
            message,
            status=self.limits.budget_status,
            code="budget_exceeded",
            headers=headers,
            error_type="insufficient_quota",
        )

    def _note_soft(self, call: Call, hold: Hold) -> None:
        for line, value in zip(hold.lines, hold.values, strict=True):
            if not line.hard and line.limit is not None and value > line.limit:
                reason = _soft_reason(line, value)
                call.labels["budget.soft_exceeded"] = line.rule
                call.decide(Decision(_NAME, "modify", reason))
                self._alert(line, reason)

    def _alert(self, line: Line, reason: str) -> None:
        """One warning per budget, subject and window in each process, not one per call."""
        key = (line.rule, line.subject, line.window.start)
        if key in self._alerted:
            return
        if len(self._alerted) > 10_000:
            self._alerted.clear()
        self._alerted.add(key)
        log.warning("%s", reason, extra={"budget": line.rule, "subject": line.subject})


def _soft_reason(line: Line, value: int) -> str:
    return (
        f"soft budget '{line.rule}' ({line.subject}) passed: {value} > {line.limit} {line.unit}"
        " (allowed; later policies may downgrade)"
    )
