"""The `rules` policy: ordered rules ops write in YAML, each conditions and actions.

Evaluation, the same for every call and documented in docs/policies.md:
- Rules are tested in order. Every rule whose conditions all hold *matches*.
- A matching enforced rule applies its actions. `deny` ends the call at once. `route` and
  `max_tokens` are taken from the first matching rule that sets them; a later matching rule's
  route or cap is recorded as overridden. Tags and labels add up.
- `stop: true` ends evaluation after its rule, if it matched.
- A shadow rule is tested and recorded (what it would have done; a route it would have taken is
  priced when the call is recorded) but changes nothing and never stops evaluation.
- Every matching rule leaves a decision on the call (audit event, trace) and its name in the
  `x-tollgate-rules` response header (`x-tollgate-rules-shadow` for shadow rules).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from gateway.accounting.context import LimitsContext
from gateway.accounting.limits import budget_counter, budget_subject
from gateway.accounting.request_size import output_field
from gateway.call import (
    NOTICE,
    Call,
    Decision,
    Deny,
    Outcome,
    Route,
    Verdict,
)
from gateway.policies.base import PluginContext, PolicyPlugin, PolicyView
from gateway.policies.rules.checks import reference_problems
from gateway.policies.rules.conditions import (
    BudgetUsed,
    Condition,
    Facts,
    compile_match,
    requested_max_tokens,
)
from gateway.policies.rules.guard import GUARD_LABEL, Guard, GuardState
from gateway.policies.rules.index import RuleIndex
from gateway.policies.rules.schema import CACHE_LABEL, Rule, RulesOptions
from gateway.routing.flex import FLEX_LABEL
from gateway.stores.counters import StoreUnavailable
from gateway.tenancy import PromptCacheAsk, tenant_key

_NAME = "rules"
_BUDGET_TTL_S = 1.0  # a budget's used fraction is read from the store at most once a second
_UTC = ZoneInfo("UTC")


@dataclass(frozen=True, slots=True)
class Compiled:
    rule: Rule
    conditions: tuple[Condition, ...]


@dataclass(frozen=True, slots=True)
class Verdicts:
    """What evaluation decided for one call (before anything is applied)."""

    matched: tuple[Rule, ...]
    route: tuple[Rule, Route] | None
    max_tokens: tuple[Rule, int, bool] | None  # rule, value, set (else cap)
    deny: Rule | None
    shadow: tuple[Rule, ...]


class Rules(PolicyPlugin):
    name = _NAME
    Options = RulesOptions
    options: RulesOptions

    def __init__(self, options: RulesOptions, context: PluginContext) -> None:
        super().__init__(options, context)
        self.compiled = tuple(Compiled(r, tuple(compile_match(r.match))) for r in options.rules)
        self.index = RuleIndex([r.match for r in options.rules])
        self._budgets = sorted(
            {c.budget for rule in self.compiled for c in rule.conditions
             if isinstance(c, BudgetUsed)}
        )  # fmt: skip
        self.limits = context.limits
        self._fractions: dict[str, tuple[float, float | None]] = {}  # counter -> (read at, value)
        self.guards = self._guards(options, context)

    @classmethod
    def references(
        cls, options: RulesOptions, view: PolicyView
    ) -> list[tuple[tuple[Any, ...], str]]:
        """Tiers, aliases and budgets the rules name that the config does not have."""
        return reference_problems(options, view)

    def facts(self, call: Call, budgets: Mapping[str, float | None]) -> Facts:
        limits = self.limits
        zone = limits.zone if limits is not None else _UTC
        clock = limits.ledger.clock if limits is not None else time.time
        return Facts(call, self.context.tokens, zone, clock, budgets)

    def _guards(self, options: RulesOptions, context: PluginContext) -> dict[str, Guard]:
        """A guard per guarded rule; its state is kept across reloads while it is unchanged."""
        if context.side_calls is None:
            return {}
        budgets = {b.name: b for b in context.limits.budgets} if context.limits else {}
        out = {}
        for rule in options.rules:
            settings = rule.quality_guard
            if settings is None or rule.mode == "shadow":
                continue
            key = f"guard:{rule.name}:{settings.model_dump_json()}"
            state = context.keep.setdefault(key, GuardState(settings.window))
            out[rule.name] = Guard(rule.name, settings, state, context.side_calls,
                                   budgets.get(settings.budget))  # fmt: skip
        return out

    async def on_request(self, call: Call) -> Verdict | None:
        if GUARD_LABEL in call.labels:
            return None  # a guard's own reference call: served as asked
        budgets = await self.budget_fractions(call) if self._budgets else {}
        verdicts = self.evaluate(self.facts(call, budgets))
        if not verdicts.matched and not verdicts.shadow:
            return None
        return self._apply(call, verdicts)

    def evaluate(self, facts: Facts) -> Verdicts:
        matched: list[Rule] = []
        shadow: list[Rule] = []
        route: tuple[Rule, Route] | None = None
        cap: tuple[Rule, int, bool] | None = None
        for i in self.index.matching(facts):
            rule = self.compiled[i].rule
            if rule.mode == "shadow":
                shadow.append(rule)
                continue
            matched.append(rule)
            actions = rule.actions
            if actions.deny is not None:
                return Verdicts(tuple(matched), route, cap, rule, tuple(shadow))
            if actions.route is not None and route is None and not self._suspended(rule.name):
                route = (rule, Route(actions.route.tier, actions.route.alias, f"rule {rule.name}"))
            mt = actions.max_tokens
            if mt is not None and cap is None:
                cap = (rule, mt.set, True) if mt.set is not None else (rule, mt.cap or 0, False)
            if rule.stop:
                break
        return Verdicts(tuple(matched), route, cap, None, tuple(shadow))

    def _apply(self, call: Call, v: Verdicts) -> Verdict | None:
        for rule in v.shadow:
            call.decide(Decision(_NAME, "shadow", f"rule '{rule.name}' would have: "
                                 f"{describe_actions(rule)}", enforced=False))  # fmt: skip
            if rule.actions.route is not None:
                r = rule.actions.route
                intent = Route(r.tier, r.alias, f"rule {rule.name}")
                call.shadows = [*(call.shadows or ()), (rule.name, intent)]
        if v.shadow:
            call.labels[f"{NOTICE}rules-shadow"] = ",".join(r.name for r in v.shadow)
        if v.matched:
            call.labels[f"{NOTICE}rules"] = ",".join(r.name for r in v.matched)
        if v.deny is not None:
            deny = v.deny.actions.deny
            assert deny is not None
            kind = "invalid_request_error" if deny.status == 400 else "policy_error"
            return Deny(
                deny.message,
                status=deny.status,
                code="rule_denied",
                error_type=kind,
                reason=f"rule '{v.deny.name}': {deny.message}",
            )
        for rule in v.matched:
            self._apply_rule(call, rule, v)
        return None

    def _apply_rule(self, call: Call, rule: Rule, v: Verdicts) -> None:
        actions = rule.actions
        done: list[str] = []
        if actions.route is not None:
            if self._suspended(rule.name):
                state = self.guards[rule.name].state
                rate = f"{state.agreement or 0:.0%} over {len(state.results)} samples"
                done.append(f"route suspended by its quality guard (agreement {rate})")
            elif v.route is None or v.route[0] is not rule:
                done.append("route overridden by an earlier rule")
            elif self.routable(call, v.route[1]):
                call.route = v.route[1]
                done.append(describe_route(v.route[1]))
                guard = self.guards.get(rule.name)
                if guard is not None and guard.sampled():
                    call.state[_NAME] = rule.name
                    call.keep_response = True
                    done.append("sampled by its quality guard")
            else:
                done.append(f"not routed: model {call.model!r} has no tier {v.route[1].tier!r}")
        if actions.max_tokens is not None:
            if v.max_tokens is not None and v.max_tokens[0] is rule:
                done.append(_max_tokens(call, v.max_tokens[1], v.max_tokens[2]))
            else:
                done.append("max_tokens overridden by an earlier rule")
        if actions.prompt_cache is not None:
            if call.prompt_cache is None:
                ask = actions.prompt_cache
                p = call.principal
                key = tenant_key(p.name, p.team, p.org, ask.key)
                call.prompt_cache = PromptCacheAsk(ask.min_tokens, key)
                done.append(f"vendor prompt cache (prefixes of {ask.min_tokens}+ tokens)")
            else:
                done.append("prompt cache set by an earlier rule")
        if actions.cache is not None:
            if CACHE_LABEL not in call.labels:
                call.labels[CACHE_LABEL] = actions.cache
                done.append(f"cache mode {actions.cache}")
            else:
                done.append("cache mode set by an earlier rule")
        if actions.defer is not None:
            if FLEX_LABEL not in call.labels:
                call.labels[FLEX_LABEL] = f"{actions.defer.max_wait_seconds:g}"
                done.append(f"deferred: waits up to {actions.defer.max_wait_seconds:g} s for "
                            "spare capacity")  # fmt: skip
            else:
                done.append("deferred by an earlier rule")
        if actions.tags:
            call.labels["rule.tags"] = ",".join(
                dict.fromkeys([*call.labels.get("rule.tags", "").split(","), *actions.tags])
            ).strip(",")
            done.append(f"tags {list(actions.tags)}")
        if actions.labels:
            call.labels.update(actions.labels)
            done.append(f"labels {actions.labels}")
        routed = call.route is not None and v.route is not None and v.route[0] is rule
        reason = f"rule '{rule.name}': {'; '.join(done)}"
        call.decide(Decision(_NAME, "route" if routed else "modify", reason))

    def _suspended(self, rule: str) -> bool:
        guard = self.guards.get(rule)
        return guard is not None and guard.state.suspended

    async def on_response(self, call: Call, outcome: Outcome) -> None:
        rule = call.state.pop(_NAME, None)
        if rule is None:
            return
        body = outcome.response_body
        if outcome.status != 200 or outcome.partial or outcome.disconnected or not body:
            return
        guard = self.guards[rule]
        reference = guard.settings.reference or self.context.references.get(call.model)
        guard.check(call, body, reference)

    async def aclose(self) -> None:
        for guard in self.guards.values():
            await guard.aclose()

    def routable(self, call: Call, route: Route) -> bool:
        """A route to a tier applies to aliases that have it (checked at load: at least one
        of the rule's models does)."""
        if route.tier is None:
            return True
        tiers = self.context.tiers.get(route.alias or call.model)
        return tiers is None or route.tier in tiers

    async def budget_fractions(self, call: Call) -> dict[str, float | None]:
        """Each budget the rules read: the caller's counter's used fraction of its limit."""
        limits = self.limits
        if limits is None:
            return {}
        rules = {b.name: b for b in (*limits.budgets, *limits.sql_budgets())}
        now = limits.ledger.clock()
        out: dict[str, float | None] = {}
        for name in self._budgets:
            rule = rules.get(name)
            subject = budget_subject(rule, call.principal, call.model) if rule else None
            if rule is None or subject is None:
                out[name] = None
                continue
            _, stem = budget_counter(rule, subject, now, limits.zone)
            unit, limit = ("usd", rule.usd_nanos) if rule.usd_nanos else ("tokens", rule.tokens)
            key = f"{stem}:{unit}"
            cached = self._fractions.get(key)
            if cached is None or now - cached[0] >= _BUDGET_TTL_S:
                cached = (now, await _fraction(limits, key, limit))
                if len(self._fractions) > 100_000:
                    self._fractions.clear()
                self._fractions[key] = cached
            out[name] = cached[1]
        return out


async def _fraction(limits: LimitsContext, key: str, limit: int | None) -> float | None:
    if not limit:
        return None
    try:
        (value,) = await limits.ledger.values([key])
    except StoreUnavailable:
        return None
    return value / limit


def _max_tokens(call: Call, value: int, force: bool) -> str:
    field = output_field(call.endpoint, call.body)
    requested = requested_max_tokens(call)
    if force:
        call.body[field] = value
        call.labels[f"{NOTICE}max-tokens"] = f"{value}; requested={requested}"
        return f"max_tokens set to {value} (asked {requested})"
    if requested is None or requested > value:
        call.body[field] = value
        call.labels[f"{NOTICE}max-tokens"] = f"{value}; requested={requested}"
        return f"max_tokens capped at {value} (asked {requested})"
    return f"max_tokens {requested} already within {value}"


def describe_route(route: Route) -> str:
    where = " of ".join(x for x in (route.tier and f"tier {route.tier}", route.alias) if x)
    return f"route to {where}"


def describe_actions(rule: Rule) -> str:
    a = rule.actions
    parts: list[str] = []
    if a.deny is not None:
        parts.append(f"deny ({a.deny.status}: {a.deny.message})")
    if a.route is not None:
        parts.append(describe_route(Route(a.route.tier, a.route.alias)))
    if a.max_tokens is not None:
        m = a.max_tokens
        parts.append(f"max_tokens set to {m.set}" if m.set else f"max_tokens capped at {m.cap}")
    if a.prompt_cache is not None:
        parts.append(f"vendor prompt cache (prefixes of {a.prompt_cache.min_tokens}+ tokens)")
    if a.cache is not None:
        parts.append(f"cache mode {a.cache}")
    if a.defer is not None:
        parts.append(f"defer (waits up to {a.defer.max_wait_seconds:g} s for spare capacity)")
    if a.tags:
        parts.append(f"tags {list(a.tags)}")
    if a.labels:
        parts.append(f"labels {a.labels}")
    return "; ".join(parts)
