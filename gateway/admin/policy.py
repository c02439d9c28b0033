"""`tollgate policy check|explain` and GET /admin/policy/explain: what ops ask of their rules
before (and while) they are enforced. One implementation for the CLI and the admin API."""

from __future__ import annotations

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
from gateway.policies.rules.explain import Probe, explain
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


async def explain_call(runtime: Runtime, query: ExplainQuery) -> dict[str, Any]:
    """Each rule and condition, then the plan the router would follow."""
    if query.model not in runtime.router:
        raise ValueError(f"unknown model {query.model!r} (models: "
                         f"{', '.join(runtime.router.aliases())})")  # fmt: skip
    probe = Probe(query.model, principal_for(runtime.loaded, query), query.headers(),
                  query.prompt_tokens, query.max_tokens, query.stream)  # fmt: skip
    rules = [p for p in runtime.chain.plugins() if isinstance(p, Rules)]
    result, intent = await explain(rules, probe)
    result["plan"] = [] if result["denied"] else plan(runtime, query.model, intent)
    return result


def plan(runtime: Runtime, model: str, intent: Route | None) -> list[dict[str, Any]]:
    """The steps the router would try, each tier's replicas with their state now (the order
    within a tier is the strategy's, decided per call)."""
    router = runtime.router
    states = {(s.backend, s.model): s for s in router.replica_states()}
    steps = []
    for step in router.steps(model, intent):
        steps.append({
            "alias": step.alias,
            "tier": step.tier.name,
            "why": step.why,
            "strategy": step.tier.strategy,
            "replicas": [
                {"backend": r.backend, "model": r.model,
                 "circuit": states[(r.backend, r.model)].circuit,
                 "in_flight": states[(r.backend, r.model)].in_flight}
                for r in step.tier.replicas
            ],
        })  # fmt: skip
    return steps


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


def rules_status(runtime: Runtime) -> list[dict[str, Any]]:
    """Each rule of the running chain: its mode, and its quality guard's state."""
    out = []
    for plugin in runtime.chain.plugins():
        if not isinstance(plugin, Rules):
            continue
        for compiled in plugin.compiled:
            rule = compiled.rule
            guard = plugin.guards.get(rule.name)
            out.append({"rule": rule.name, "mode": rule.mode,
                        "guard": guard.state.public() if guard else None})  # fmt: skip
    return out


def resume(runtime: Runtime, name: str) -> dict[str, Any]:
    """Lifts a quality guard's suspension (ops' decision); LookupError if no guard has it."""
    for plugin in runtime.chain.plugins():
        if isinstance(plugin, Rules) and name in plugin.guards:
            guard = plugin.guards[name]
            was = guard.state.suspended
            guard.resume()
            return {"rule": name, "was_suspended": was, "guard": guard.state.public()}
    raise LookupError(f"no rule named {name!r} has a quality guard")


def check(loaded: LoadedConfig) -> list[str]:
    """Warnings on a valid config's rules: rules never reached or always overridden."""
    out: list[str] = []
    for spec in loaded.policies:
        if spec.plugin_cls is Rules:
            out += lint(spec.options)  # type: ignore[arg-type]
    return out
