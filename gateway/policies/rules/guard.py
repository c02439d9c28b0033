"""A rule's quality guard: samples of the calls the rule routes to a cheaper tier are sent
again to the reference tier, off the request path, and the two answers compared. The rolling
agreement rate decides whether the rule keeps routing (docs/policies.md, "Quality guard").

A guard call is an ordinary call of the gateway's own: it goes through the policy chain (the
rules skip it), the ops budget's counters, the router and the audit log, where a `note`
decision says whose sample it is. It never delays the client: it starts after the client's
answer is complete. Its state (samples, suspension) outlives config reloads while the rule
and its guard are unchanged.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from gateway.budget_rules import BudgetRule
from gateway.call import Call, Decision, Principal, Route
from gateway.policies.base import SideCalls
from gateway.policies.rules.compare import Answer, Comparator, Context, answer_of, resolve
from gateway.policies.rules.schema import QualityGuard

log = logging.getLogger("gateway.rules")
GUARD_LABEL = "guard"  # on a guard call: the rule it samples for (the rules skip such calls)


@dataclass(slots=True)
class GuardState:
    """What a guard has seen: the last `window` comparisons, and whether it suspended its rule."""

    window: int
    results: deque[bool] = field(default_factory=deque)
    samples: int = 0
    errors: int = 0
    suspended: bool = False
    suspended_at: float | None = None

    def add(self, agreed: bool) -> None:
        self.samples += 1
        self.results.append(agreed)
        while len(self.results) > self.window:
            self.results.popleft()

    @property
    def agreement(self) -> float | None:
        return sum(self.results) / len(self.results) if self.results else None

    def status(self) -> GuardStatus:
        return GuardStatus(self.samples, len(self.results), self.agreement, self.suspended,
                           self.errors)  # fmt: skip


@dataclass(frozen=True, slots=True)
class GuardStatus:
    """A guard's state at one moment, for the admin API, the dashboard and /metrics."""

    samples: int
    window: int  # comparisons in the rolling window now
    agreement: float | None
    suspended: bool
    errors: int

    def public(self) -> dict[str, Any]:
        return {"samples": self.samples, "window": self.window, "agreement": self.agreement,
                "suspended": self.suspended, "errors": self.errors}  # fmt: skip


class Guard:
    def __init__(
        self,
        rule: str,
        settings: QualityGuard,
        state: GuardState,
        side_calls: SideCalls,
        budget: BudgetRule | None,
        rng: random.Random | None = None,
    ) -> None:
        self.rule = rule
        self.settings = settings
        self.state = state
        self._side = side_calls
        self._principal = _principal(budget)
        self._compare: Comparator = resolve(settings.compare)
        self._rng = rng or random.Random()
        self._tasks: set[asyncio.Task[None]] = set()

    def sampled(self) -> bool:
        return not self.state.suspended and self._rng.random() < self.settings.sample

    def check(self, call: Call, served: bytes, reference_tier: str | None) -> None:
        """Starts the comparison for a sampled call whose answer is complete (not awaited)."""
        task = asyncio.create_task(self._check(call, served, reference_tier))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _check(self, call: Call, served: bytes, reference_tier: str | None) -> None:
        try:
            ours = answer_of(served, call.dialect, call.stream)
            theirs = await self._reference(call, reference_tier)
            if ours is None or theirs is None:
                self.state.errors += 1
                return
            embed = self._embed if self.settings.embedding_model else None
            context = Context(self.settings.similarity, embed)
            agreed = await self._compare.agree(ours, theirs, context)
        except Exception:
            self.state.errors += 1
            log.exception("quality guard of rule %s: a comparison failed", self.rule)
            return
        self.state.add(agreed)
        self._judge()

    async def _reference(self, call: Call, tier: str | None) -> Answer | None:
        body = {k: v for k, v in call.body.items() if k not in ("stream", "stream_options")}
        guard = self._call(
            call, call.model, body, Route(tier, None, f"quality guard of {self.rule}")
        )
        status, answer = await self._side.run(guard)
        return answer_of(answer, call.dialect, False) if status == 200 else None

    async def _embed(self, texts: Sequence[str]) -> list[list[float]] | None:
        alias = self.settings.embedding_model
        assert alias is not None
        body: dict[str, Any] = {"model": alias, "input": list(texts)}
        probe = Call(f"guard-embed-{self.rule}", "openai", "embeddings", alias, body, False, False)
        status, raw = await self._side.run(self._call(probe, alias, body, None))
        if status != 200:
            return None
        data = orjson.loads(raw).get("data") or []
        return [item["embedding"] for item in sorted(data, key=lambda d: d.get("index", 0))]

    def _call(self, original: Call, model: str, body: dict[str, Any], route: Route | None) -> Call:
        guard = Call(
            f"{original.request_id}-guard", original.dialect, original.endpoint, model, body,
            False, False, principal=self._principal, route=route,
        )  # fmt: skip
        guard.labels[GUARD_LABEL] = self.rule
        guard.decide(Decision("rules", "note", f"quality guard call for rule '{self.rule}', "
                              f"sampling request {original.request_id}"))  # fmt: skip
        return guard

    def _judge(self) -> None:
        state, s = self.state, self.settings
        rate = state.agreement
        if state.suspended or rate is None or len(state.results) < s.min_samples:
            return
        if rate < s.min_agreement:
            state.suspended = True
            log.error(
                "quality guard suspended rule %s: its answers agreed with the reference tier's "
                "%.1f%% of the last %d samples (floor %.1f%%); its traffic goes back to the "
                "reference until it is resumed (tollgate policy resume %s)",
                self.rule, rate * 100, len(state.results), s.min_agreement * 100, self.rule,
            )  # fmt: skip

    @property
    def comparing(self) -> int:
        """Reference calls and comparisons under way (off the request path)."""
        return len(self._tasks)

    def resume(self) -> None:
        """Ops' decision: route again, judged afresh."""
        self.state.suspended = False
        self.state.results.clear()

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


def _principal(budget: BudgetRule | None) -> Principal:
    """Who guard calls are charged to: a caller the ops budget applies to."""
    name = "quality-guard"
    if budget is None or budget.subject in (None, "*"):
        return Principal(key_id=name, name=name, team=name)
    scope, subject = budget.scope, budget.subject
    return Principal(
        key_id=name,
        name=subject if scope == "key" else name,
        team=subject if scope == "team" else name,
        user=subject if scope == "user" else None,
        org=subject if scope == "org" else None,
    )
