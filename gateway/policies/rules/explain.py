"""What the rules would do with a call, and why: each rule, each condition's result, and the plan
that follows (tier, replicas in order, max_tokens, or the refusal). Used by `tollgate policy
explain` and GET /admin/policy/explain; nothing is sent anywhere and nothing is charged."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway.call import Call, Principal, Route
from gateway.policies.rules.engine import Rules, describe_actions, describe_route


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


async def explain(rules: list[Rules], probe: Probe) -> tuple[dict[str, Any], Route | None]:
    """Every rule of every `rules` entry, in evaluation order, and the outcome; and the route
    the call would take (None: its alias's default tier)."""
    call = probe.call()
    out: list[dict[str, Any]] = []
    route: Route | None = None
    cap: tuple[str, int, bool] | None = None
    denied: dict[str, Any] | None = None
    stopped = False
    for plugin in rules:
        budgets = await plugin.budget_fractions(call)
        facts = plugin.facts(call, budgets)
        if probe.prompt_tokens is not None:
            facts._prompt = probe.prompt_tokens
        for compiled in plugin.compiled:
            rule = compiled.rule
            entry: dict[str, Any] = {"rule": rule.name, "mode": rule.mode,
                                     "actions": describe_actions(rule)}  # fmt: skip
            if stopped or denied is not None:
                entry["evaluated"] = False
                out.append(entry)
                continue
            conditions = []
            for condition in compiled.conditions:
                holds = condition.test(facts)
                conditions.append({"condition": condition.name, "holds": holds,
                                   "seen": condition.describe(facts)})  # fmt: skip
            matched = all(c["holds"] is True for c in conditions)
            entry.update(evaluated=True, matched=matched, conditions=conditions)
            out.append(entry)
            if not matched or rule.mode == "shadow":
                continue
            actions = rule.actions
            if actions.deny is not None:
                denied = {"rule": rule.name, "status": actions.deny.status,
                          "message": actions.deny.message}  # fmt: skip
            guard = plugin.guards.get(rule.name)
            if guard is not None:
                entry["guard"] = guard.state.public()
            if actions.route is not None and route is None:
                wanted = Route(actions.route.tier, actions.route.alias, f"rule {rule.name}")
                if guard is not None and guard.state.suspended:
                    entry["route"] = "suspended by its quality guard"
                elif plugin.routable(call, wanted):
                    route = wanted
            if actions.max_tokens is not None and cap is None:
                m = actions.max_tokens
                cap = (rule.name, m.set or m.cap or 0, m.set is not None)
            stopped = rule.stop
    result: dict[str, Any] = {"rules": out, "denied": denied,
              "route": describe_route(route).removeprefix("route to ") if route else None,
              "max_tokens": None if cap is None else {
                  "rule": cap[0], "set" if cap[2] else "cap": cap[1]}}  # fmt: skip
    return result, route
