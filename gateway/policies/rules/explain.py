"""What the rules would do with a call, and why: each rule, each condition's result, and the plan
that follows (tier, replicas in order, max_tokens, or the refusal). Used by `tollgate policy
explain` and GET /admin/policy/explain; nothing is sent anywhere and nothing is charged."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from gateway.call import Call, Principal, Route
from gateway.policies.rules.engine import Rules, describe_actions, describe_route
from gateway.policies.rules.guard import GuardStatus


@dataclass(frozen=True, slots=True)
class Probe:
    """The call to explain, as an operator describes it."""

    model: str
    principal: Principal
    headers: Mapping[str, str] = field(default_factory=dict)
    prompt_tokens: int | None = None
    max_tokens: int | None = None
    stream: bool = False
    endpoint: str = "chat.completions"

    def call(self) -> Call:
        body: dict[str, Any] = {"model": self.model, "stream": self.stream,
                                "messages": [{"role": "user", "content": "(explain)"}]}  # fmt: skip
        if self.max_tokens is not None:
            body["max_tokens"] = self.max_tokens
        raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in self.headers.items()]
        return Call("explain", "openai", self.endpoint, self.model, body, self.stream,  # type: ignore[arg-type]
                    False, principal=self.principal, raw_headers=raw)  # fmt: skip


@dataclass(frozen=True, slots=True)
class ConditionSeen:
    condition: str
    holds: bool | None  # None: it cannot tell (a budget the explainer cannot read)
    seen: str


@dataclass(frozen=True, slots=True)
class RuleSeen:
    """One rule as the call would meet it; `evaluated` False when an earlier one ended it."""

    rule: str
    mode: str
    actions: str
    evaluated: bool
    matched: bool = False
    conditions: tuple[ConditionSeen, ...] = ()
    guard: GuardStatus | None = None
    route: str | None = None  # why its route would not apply

    def public(self) -> dict[str, Any]:
        out: dict[str, Any] = {"rule": self.rule, "mode": self.mode, "actions": self.actions,
                               "evaluated": self.evaluated}  # fmt: skip
        if not self.evaluated:
            return out
        out["matched"] = self.matched
        out["conditions"] = [{"condition": c.condition, "holds": c.holds, "seen": c.seen}
                             for c in self.conditions]  # fmt: skip
        if self.guard is not None:
            out["guard"] = self.guard.public()
        if self.route is not None:
            out["route"] = self.route
        return out


@dataclass(frozen=True, slots=True)
class Explanation:
    """What the rules would do with a call: each rule, then the refusal, route and cap."""

    rules: tuple[RuleSeen, ...]
    denied: tuple[str, int, str] | None  # (rule, status, message)
    route: str | None
    max_tokens: tuple[str, int, bool] | None  # (rule, value, set rather than capped)
    deferred: tuple[str, float] | None = None  # (rule, most seconds it waits for room)

    def public(self) -> dict[str, Any]:
        denied, cap, deferred = self.denied, self.max_tokens, self.deferred
        return {
            "deferred": None if deferred is None
            else {"rule": deferred[0], "max_wait_seconds": deferred[1]},
            "rules": [r.public() for r in self.rules],
            "denied": None if denied is None
            else {"rule": denied[0], "status": denied[1], "message": denied[2]},
            "route": self.route,
            "max_tokens": None if cap is None
            else {"rule": cap[0], "set" if cap[2] else "cap": cap[1]},
        }  # fmt: skip


async def explain(rules: list[Rules], probe: Probe) -> tuple[Explanation, Route | None]:
    """Every rule of every `rules` entry, in evaluation order, and the outcome; and the route
    the call would take (None: its alias's default tier)."""
    call = probe.call()
    out: list[RuleSeen] = []
    route: Route | None = None
    cap: tuple[str, int, bool] | None = None
    deferred: tuple[str, float] | None = None
    denied: tuple[str, int, str] | None = None
    stopped = False
    for plugin in rules:
        budgets = await plugin.budget_fractions(call)
        facts = plugin.facts(call, budgets)
        if probe.prompt_tokens is not None:
            facts._prompt = probe.prompt_tokens
        for compiled in plugin.compiled:
            rule = compiled.rule
            seen = RuleSeen(rule.name, rule.mode, describe_actions(rule), evaluated=False)
            if stopped or denied is not None:
                out.append(seen)
                continue
            conditions = tuple(ConditionSeen(c.name, c.test(facts), c.describe(facts))
                               for c in compiled.conditions)  # fmt: skip
            matched = all(c.holds is True for c in conditions)
            seen = replace(seen, evaluated=True, matched=matched, conditions=conditions)
            if not matched or rule.mode == "shadow":
                out.append(seen)
                continue
            actions = rule.actions
            if actions.deny is not None:
                denied = (rule.name, actions.deny.status, actions.deny.message)
            guard = plugin.guards.get(rule.name)
            if guard is not None:
                seen = replace(seen, guard=guard.state.status())
            if actions.route is not None and route is None:
                wanted = Route(actions.route.tier, actions.route.alias, f"rule {rule.name}")
                if guard is not None and guard.state.suspended:
                    seen = replace(seen, route="suspended by its quality guard")
                elif plugin.routable(call, wanted):
                    route = wanted
            out.append(seen)
            if actions.max_tokens is not None and cap is None:
                m = actions.max_tokens
                cap = (rule.name, m.set or m.cap or 0, m.set is not None)
            if actions.defer is not None and deferred is None:
                deferred = (rule.name, actions.defer.max_wait_seconds)
            stopped = rule.stop
    shown = describe_route(route).removeprefix("route to ") if route else None
    return Explanation(tuple(out), denied, shown, cap, deferred), route
