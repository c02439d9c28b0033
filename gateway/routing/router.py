"""Alias (+ a policy's intent) -> the ordered plan of attempts a call may make.

A plan is lazy: the first attempt is decided when the call is sent, the next only if that one
failed, each from the replicas' state at that moment. The order: the intended tier (a policy's
`Route`, else the alias's default tier), then the alias's fallbacks (other tiers, other
aliases' default tiers), each tier's replicas in its strategy's order; replicas whose circuit
is open are passed over (an open one whose cooldown is over gets its one half-open probe).
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from gateway.call import Call, Route, Target
from gateway.routing.state import ReplicaState
from gateway.routing.strategies import Strategy
from gateway.routing.table import AliasRoute, Replica, Step, Tier


@dataclass(frozen=True, slots=True)
class Attempt:
    alias: str
    replica: Replica
    state: ReplicaState
    why: str


class Router:
    def __init__(
        self,
        table: Mapping[str, AliasRoute],
        states: Mapping[tuple[str, str], ReplicaState],
        strategies: Mapping[tuple[str, str], Strategy],
        rng: random.Random | None = None,
        timeouts: Mapping[str, float] | None = None,
    ) -> None:
        self.table = dict(table)
        self._states = states
        self._strategies = strategies  # by (alias, tier)
        self._rng = rng or random.Random()
        self._aliases = sorted(self.table)
        self._timeouts = timeouts or {}  # backend -> its `timeouts.total`
        self._budgets: dict[tuple[str, str | None, str | None], float] = {}
        self._steps: dict[tuple[str, str | None, str | None, str], list[Step]] = {}

    def __contains__(self, alias: str) -> bool:
        return alias in self.table

    def aliases(self) -> list[str]:
        return self._aliases

    def configured(self, alias: str) -> tuple[Target, ...]:
        """The default tier's replicas, in config order (no state consulted)."""
        route = self.table[alias]
        return tuple(r.target for r in route.tiers[route.default_tier].replicas)

    def steps(self, alias: str, intent: Route | None = None) -> list[Step]:
        """The (alias, tier) pairs a call may be served from, in order (computed once per alias
        and intent for this routing table: this is on every call's path)."""
        key = (alias, None, None, "") if intent is None else (
            alias, intent.tier, intent.alias, intent.reason)  # fmt: skip
        found = self._steps.get(key)
        if found is None:
            found = self._plan_steps(alias, intent)
            if len(self._steps) < 10_000:
                self._steps[key] = found
        return found

    def _plan_steps(self, alias: str, intent: Route | None) -> list[Step]:
        # A policy's intent names an alias the table has (checked where policies are loaded);
        # one that does not is ignored rather than failing the call.
        wanted = intent.alias if intent is not None and intent.alias else alias
        first = self.table.get(wanted) or self.table[alias]
        tier = intent.tier if intent is not None and intent.tier in first.tiers else None
        why = f"routed by policy ({intent.reason})" if intent is not None else "default tier"
        out = [Step(first.name, first.tiers[tier or first.default_tier], why)]
        seen = {(first.name, out[0].tier.name)}
        for kind, name in first.fallbacks:
            step = self._fallback(first, kind, name)
            if step is not None and (step.alias, step.tier.name) not in seen:
                seen.add((step.alias, step.tier.name))
                out.append(step)
        return out

    def _fallback(self, route: AliasRoute, kind: str, name: str) -> Step | None:
        if kind == "tier":
            return Step(route.name, route.tiers[name], f"fallback tier {name}")
        other = self.table.get(name)
        if other is None:
            return None
        return Step(name, other.tiers[other.default_tier], f"fallback alias {name}")

    def reachable(self, alias: str, intent: Route | None = None) -> tuple[Target, ...]:
        """Every replica a plan for this call may reach (budgets reserve at the dearest)."""
        return tuple(r.target for step in self.steps(alias, intent) for r in step.tier.replicas)

    def plan(
        self, alias: str, intent: Route | None = None, call: Call | None = None
    ) -> Iterator[Attempt]:
        for step in self.steps(alias, intent):
            yield from self._tier(step.alias, step.tier, step.why, call)

    def budget(self, alias: str, intent: Route | None = None) -> float:
        """A call's time budget: the longest `timeouts.total` among the backends its plan may
        reach (a fallback with a longer one is not cut short by a quick primary's). Computed
        once per alias and intent for this routing table."""
        key = (alias, intent.tier, intent.alias) if intent is not None else (alias, None, None)
        found = self._budgets.get(key)
        if found is None:
            found = max(self._timeouts.get(t.backend, 600.0) for t in self.reachable(alias, intent))
            if len(self._budgets) < 10_000:
                self._budgets[key] = found
        return found

    def every_attempt(self, alias: str, intent: Route | None = None) -> list[Attempt]:
        """Every replica the plan could try, available or not (to say why none was)."""
        return [
            Attempt(step.alias, r, self._states[r.key], step.why)
            for step in self.steps(alias, intent)
            for r in step.tier.replicas
        ]

    def _tier(self, alias: str, tier: Tier, why: str, call: Call | None) -> Iterator[Attempt]:
        replicas = tier.replicas
        states = [self._states[r.key] for r in replicas]
        strategy = self._strategies[(alias, tier.name)]
        for i in strategy.order(replicas, states, self._rng, call):
            state = states[i]
            if state.available():
                yield Attempt(alias, replicas[i], state, why)

    def states(self, alias: str) -> list[ReplicaState]:
        """The live state of every replica of the alias."""
        return [self._states[r.key] for t in self.table[alias].tiers.values() for r in t.replicas]

    def has_room(self, alias: str, below: int) -> bool:
        """Some available replica of the alias has fewer than `below` calls in flight (ours,
        and the engine's own running and waiting ones as its load metrics say): room for work
        that can wait (batch lines, flex calls) without delaying live traffic."""
        if alias not in self.table:
            return True  # nothing to wait for: the call fails at once
        return any(s.available() and max(s.in_flight, s.load) < below for s in self.states(alias))

    def replica_states(self) -> list[ReplicaState]:
        """Every replica's live state once (for /readyz, the admin API, metrics, checks)."""
        return list(self._states.values())

    def replicas_by_tier(self) -> dict[str, dict[str, list[ReplicaState]]]:
        """Each alias's tiers and their replicas' live state (/readyz and the admin API)."""
        return {
            alias: {
                tier.name: [self._states[r.key] for r in tier.replicas]
                for tier in route.tiers.values()
            }
            for alias, route in sorted(self.table.items())
        }
