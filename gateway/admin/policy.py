"""`tollgate policy check|explain` and GET /admin/policy/explain: what ops ask of their rules
before (and while) they are enforced. One implementation for the CLI and the admin API."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any
from zoneinfo import ZoneInfo

import httpx
from pydantic import BaseModel, ConfigDict, Field

from gateway.accounting.ledger import Ledger
from gateway.accounting.tokens import TokenCounter
from gateway.auth import KeyRing
from gateway.call import Principal, Route
from gateway.config.loader import LoadedConfig
from gateway.policies.rules.engine import Rules
from gateway.policies.rules.explain import Explanation, Probe, explain
from gateway.policies.rules.guard import GuardStatus
from gateway.policies.rules.lint import lint
from gateway.runtime import Runtime, RuntimeDeps, build_runtime
from gateway.stores.memory import MemoryCounters


class ExplainQuery(BaseModel):
    """A call as an operator describes it (CLI options, admin query parameters)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field(min_length=1)
    key: str | None = None
    team: str | None = None
    header: tuple[str, ...] = ()  # "name:value"
    prompt_tokens: int | None = Field(None, ge=0)
    max_tokens: int | None = Field(None, ge=1)
    stream: bool = False

    def headers(self) -> dict[str, str]:
        out = {}
        for item in self.header:
            name, sep, value = item.partition(":")
            if not sep or not name.strip():
                raise ValueError(f"a header is NAME:VALUE, got {item!r}")
            out[name.strip().lower()] = value.strip()
        return out


def principal_for(loaded: LoadedConfig, query: ExplainQuery) -> Principal:
    """The caller: a static key's principal by name, or just a team."""
    if query.key is not None:
        for key in loaded.config.auth.keys:
            if key.name == query.key:
                return Principal(key_id=f"key:{key.name}", name=key.name, user=key.user,
                                 team=key.team, org=key.org, tags=key.tags)  # fmt: skip
        return Principal(key_id=f"key:{query.key}", name=query.key, team=query.team)
    return Principal(key_id="explain", name="explain", team=query.team)


@dataclass(frozen=True, slots=True)
class ReplicaNow:
    backend: str
    model: str
    circuit: str
    in_flight: int


@dataclass(frozen=True, slots=True)
class PlanStep:
    """A step the router would try: a tier, why, and its replicas with their state now."""

    alias: str
    tier: str
    why: str
    strategy: str
    replicas: tuple[ReplicaNow, ...]

    def public(self) -> dict[str, Any]:
        replicas = [asdict(r) for r in self.replicas]
        return {"alias": self.alias, "tier": self.tier, "why": self.why,
                "strategy": self.strategy, "replicas": replicas}  # fmt: skip


@dataclass(frozen=True, slots=True)
class ExplainReport:
    explanation: Explanation
    plan: tuple[PlanStep, ...]

    def public(self) -> dict[str, Any]:
        """The JSON of `tollgate policy explain --json` and GET /admin/policy/explain."""
        return {**self.explanation.public(), "plan": [step.public() for step in self.plan]}


async def explain_call(runtime: Runtime, query: ExplainQuery) -> ExplainReport:
    """Each rule and condition, then the plan the router would follow."""
    if query.model not in runtime.router:
        raise ValueError(f"unknown model {query.model!r} (models: "
                         f"{', '.join(runtime.router.aliases())})")  # fmt: skip
    probe = Probe(query.model, principal_for(runtime.loaded, query), query.headers(),
                  query.prompt_tokens, query.max_tokens, query.stream)  # fmt: skip
    rules = [p for p in runtime.chain.plugins() if isinstance(p, Rules)]
    explanation, intent = await explain(rules, probe)
    steps = () if explanation.denied else plan(runtime, query.model, intent)
    return ExplainReport(explanation, steps)


def plan(runtime: Runtime, model: str, intent: Route | None) -> tuple[PlanStep, ...]:
    """The steps the router would try, each tier's replicas with their state now (the order
    within a tier is the strategy's, decided per call)."""
    router = runtime.router
    states = {(s.backend, s.model): s for s in router.replica_states()}

    def now(backend: str, model: str) -> ReplicaNow:
        state = states[(backend, model)]
        return ReplicaNow(backend, model, state.circuit, state.in_flight)

    return tuple(
        PlanStep(
            step.alias,
            step.tier.name,
            step.why,
            step.tier.strategy,
            tuple(now(r.backend, r.model) for r in step.tier.replicas),
        )
        for step in router.steps(model, intent)
    )


def offline_runtime(loaded: LoadedConfig) -> Runtime:
    """A runtime built from a config without starting anything (no network, no database):
    budget conditions read empty counters, so they cannot tell."""
    zone = ZoneInfo(loaded.config.limits.timezone)
    deps = RuntimeDeps(
        transport=httpx.AsyncHTTPTransport(),
        tokens=TokenCounter(),
        ring=KeyRing(b"explain"),
        ledger=Ledger(MemoryCounters(), "open", zone),
        sql_budgets=tuple,
    )
    return build_runtime(loaded, deps, env={})


@dataclass(frozen=True, slots=True)
class RuleStatus:
    """A running rule: its mode, and its quality guard's state (None: it has none)."""

    rule: str
    mode: str
    guard: GuardStatus | None

    def public(self) -> dict[str, Any]:
        return {"rule": self.rule, "mode": self.mode,
                "guard": self.guard.public() if self.guard else None}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Resumed:
    rule: str
    was_suspended: bool
    guard: GuardStatus

    def public(self) -> dict[str, Any]:
        return {"rule": self.rule, "was_suspended": self.was_suspended,
                "guard": self.guard.public()}  # fmt: skip


def rules_status(runtime: Runtime) -> list[RuleStatus]:
    """Each rule of the running chain: its mode, and its quality guard's state."""
    out = []
    for plugin in runtime.chain.plugins():
        if not isinstance(plugin, Rules):
            continue
        for compiled in plugin.compiled:
            rule = compiled.rule
            guard = plugin.guards.get(rule.name)
            out.append(RuleStatus(rule.name, rule.mode, guard.state.status() if guard else None))
    return out


def resume(runtime: Runtime, name: str) -> Resumed:
    """Lifts a quality guard's suspension (ops' decision); LookupError if no guard has it."""
    for plugin in runtime.chain.plugins():
        if isinstance(plugin, Rules) and name in plugin.guards:
            guard = plugin.guards[name]
            was = guard.state.suspended
            guard.resume()
            return Resumed(name, was, guard.state.status())
    raise LookupError(f"no rule named {name!r} has a quality guard")


def check(loaded: LoadedConfig) -> list[str]:
    """Warnings on a valid config's rules: rules never reached or always overridden."""
    out: list[str] = []
    for spec in loaded.policies:
        if spec.plugin_cls is Rules:
            out += lint(spec.options)  # type: ignore[arg-type]
    return out
