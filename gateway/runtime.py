"""A validated config turned into live objects: backends, router, policy chain, authenticator.

A Runtime is immutable once built; reload builds a new one and swaps a single reference, so
calls in flight finish on the Runtime they started with. Backends whose config did not change
are carried over (their pools, semaphores and simulator state survive a reload).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

import httpx

from gateway.accounting.alerts import AlertWatch
from gateway.accounting.context import LimitsContext
from gateway.accounting.ledger import Ledger
from gateway.accounting.limits import RateRule
from gateway.accounting.money import Costing
from gateway.accounting.overhead import PromptOverhead
from gateway.accounting.pricing import PriceTable
from gateway.accounting.tokens import TokenCounter
from gateway.auth import (
    Authenticator,
    KeyRing,
    OpenAccess,
    StaticKeys,
    WithVirtualKeys,
    key_digest,
)
from gateway.backends.base import Backend
from gateway.backends.registry import (
    BuildContext,
    build_backend,
    capabilities_of,
    kind_of,
    secrets_of,
)
from gateway.backends.scrub import Scrubber
from gateway.budget_rules import BudgetRule
from gateway.cache.stage import CacheStage, ResponseCache
from gateway.cache.stores import MemoryEntries
from gateway.call import Principal, Target
from gateway.config.accounting_schema import LimitsConfig
from gateway.config.backends_schema import NetworkBackend, SimBackend
from gateway.config.loader import LoadedConfig
from gateway.config.models_schema import ModelConfig, ReferenceConfig
from gateway.config.prices import price_table
from gateway.config.reload import CallCount
from gateway.config.schema import AuthConfig, Config
from gateway.policies.base import PluginContext, SideCalls
from gateway.policies.budgets import BudgetGuard
from gateway.policies.chain import ChainEntry, PolicyChain
from gateway.routing.prefix_aware import PrefixSettings
from gateway.routing.router import Router
from gateway.routing.state import CircuitSettings, ReplicaStates
from gateway.routing.strategies import Strategy, resolve
from gateway.routing.table import AliasRoute, Replica, RetryPolicy, Tier
from gateway.routing.watch import Watched

log = logging.getLogger("gateway.runtime")


@dataclass(frozen=True, slots=True)
class RuntimeDeps:
    """Long-lived things a Runtime borrows from Services (never owns)."""

    transport: httpx.AsyncBaseTransport
    tokens: TokenCounter
    ring: KeyRing
    ledger: Ledger
    sql_budgets: Callable[[], tuple[BudgetRule, ...]]
    overhead: PromptOverhead = field(default_factory=PromptOverhead)
    # Live replica state (in flight, latency, circuits): kept across reloads.
    replicas: ReplicaStates = field(default_factory=ReplicaStates)
    # How policies send calls of their own (a quality guard's); None: they cannot.
    side_calls: SideCalls | None = None
    # Policy state that outlives reloads (PluginContext.keep).
    keep: dict[str, Any] = field(default_factory=dict)
    # The response cache's store, vector index and verdicts (its settings are the config's).
    cache: ResponseCache = field(default_factory=lambda: ResponseCache(MemoryEntries()))
    # Budget alerts: which thresholds this process has reported, and where they go.
    alerts: AlertWatch | None = None


@dataclass(frozen=True, slots=True)
class Runtime:
    """Everything one loaded config decides, built once by `build_runtime` and swapped whole by
    the reloader: a call holds the Runtime it started with until it is recorded, and the old
    one is closed once its calls are done. What must survive a reload (replica state, guard
    state, the cache's store) comes in through RuntimeDeps instead."""

    loaded: LoadedConfig
    backends: Mapping[str, Backend]
    backend_configs: Mapping[str, object]
    router: Router
    chain: PolicyChain
    auth: Authenticator
    generation: int
    costing: Costing
    # Backends whose health or engine load is polled (config `health:`, `load_metrics:`).
    watched: tuple[Watched, ...] = ()
    calls: CallCount = field(default_factory=CallCount)
    # Removes this config's upstream secrets from anything sent to clients, logged or recorded.
    scrub: Scrubber = field(default_factory=Scrubber)
    cache: CacheStage = field(
        default_factory=lambda: CacheStage(ResponseCache(MemoryEntries()), {})
    )

    @property
    def config(self) -> Config:
        return self.loaded.config

    async def aclose(self, keep: Iterable[Runtime] = ()) -> None:
        """Closes the policy chain, and the backends none of `keep` (the runtimes still in
        use: the current one, others still draining) carried over."""
        await self.chain.aclose()
        kept = {id(b) for runtime in keep for b in runtime.backends.values()}
        for backend in self.backends.values():
            if id(backend) not in kept:
                await backend.aclose()


def _no_cache() -> CacheStage:
    return CacheStage(ResponseCache(MemoryEntries()), {})


def build_runtime(
    loaded: LoadedConfig,
    deps: RuntimeDeps,
    previous: Runtime | None = None,
    env: Mapping[str, str] | None = None,
) -> Runtime:
    environ = os.environ if env is None else env
    config = loaded.config
    if previous is not None and previous.config.audit != config.audit:
        log.warning("audit settings take effect on restart; the running gateway keeps its own")
    if previous is not None and previous.config.telemetry != config.telemetry:
        log.warning("telemetry settings take effect on restart; the running gateway keeps its own")
    build = BuildContext(deps.transport, deps.tokens, environ)
    backends: dict[str, Backend] = {}
    for name, backend_config in config.backends.items():
        if previous is not None and previous.backend_configs.get(name) == backend_config:
            backends[name] = previous.backends[name]
        else:
            backends[name] = build_backend(name, backend_config, build)
    router = build_router(config, deps.replicas)
    prices = price_table(config)
    costing = Costing(
        prices,
        {alias: _reference(route) for alias, route in router.table.items()},
        frozenset(n for n, b in config.backends.items() if kind_of(b).capabilities.local),
    )
    context = PluginContext(
        tokens=deps.tokens,
        models=frozenset(config.models),
        tiers={alias: frozenset(route.tiers) for alias, route in router.table.items()},
        references={
            alias: route.reference if isinstance(route.reference, str) else None
            for alias, route in router.table.items()
        },
        side_calls=deps.side_calls,
        keep=deps.keep,
        limits=_limits(config, router, prices, deps, reloading=previous is not None),
    )
    entries = [
        ChainEntry(spec.plugin_cls(spec.options, context), spec.label, spec.shadow)
        for spec in loaded.policies
    ]
    if not any(isinstance(e.plugin, BudgetGuard) for e in entries):
        # Budgets and rate limits always apply; placed last unless `use: budgets` says where.
        entries.append(ChainEntry(BudgetGuard(None, context), BudgetGuard.name, False))
    chain = PolicyChain(entries)
    return Runtime(
        loaded=loaded,
        backends=backends,
        backend_configs=dict(config.backends),
        router=router,
        chain=chain,
        auth=WithVirtualKeys(deps.ring, _authenticator(config.auth, environ)),
        generation=(previous.generation + 1) if previous else 1,
        costing=costing,
        watched=_watched(config, backends, router),
        scrub=Scrubber([x for b in config.backends.values() for x in secrets_of(b, environ)]),
        cache=CacheStage(
            deps.cache,
            {a: m.cache for a, m in config.models.items() if m.cache is not None},
            deps.side_calls,
        ),
    )


def build_router(config: Config, replicas: ReplicaStates) -> Router:
    """The routing table, each replica's live state (kept from before when its backend's
    config is unchanged) and a strategy instance per tier."""
    circuit = CircuitSettings(**config.routing.circuit.model_dump())
    prefix = PrefixSettings(**config.routing.prefix_aware.model_dump(exclude={"share"}))
    table = {alias: _route(alias, model, config) for alias, model in config.models.items()}
    states = {}
    strategies: dict[tuple[str, str], Strategy] = {}
    for alias, route in table.items():
        for tier in route.tiers.values():
            strategies[(alias, tier.name)] = resolve(tier.strategy)(prefix)
            for replica in tier.replicas:
                settings = config.backends[replica.backend]
                state = replicas.get(replica.key, settings.model_dump_json(), circuit)
                state.kv_capacity_tokens = _kv_capacity(settings, replica.model)
                states[replica.key] = state
    replicas.retain(set(states))
    timeouts = {name: b.timeouts.total for name, b in config.backends.items()}
    return Router(table, states, strategies, timeouts=timeouts)


def _kv_capacity(settings: NetworkBackend | SimBackend, model: str) -> int | None:
    """The KV tokens a replica holds, as configured (a simulated model: its blocks)."""
    if isinstance(settings, SimBackend):
        sims = [m for m in settings.models if m.name == model]
        return sum(m.kv_blocks * m.block_tokens * m.replicas for m in sims) or None
    return settings.kv_capacity_tokens


def _watched(
    config: Config, backends: Mapping[str, Backend], router: Router
) -> tuple[Watched, ...]:
    states = router.replica_states()
    return tuple(
        Watched(
            backends[name],
            settings.health,
            settings.load_metrics,
            tuple(s for s in states if s.backend == name),
        )
        for name, settings in config.backends.items()
        if settings.health is not None or settings.load_metrics is not None
    )


def _route(alias: str, model: ModelConfig, config: Config) -> AliasRoute:
    tiers = {
        name: Tier(
            name,
            tuple(Replica(r.backend, r.model, name, r.weight) for r in spec.replicas),
            spec.strategy or model.strategy,
        )
        for name, spec in model.resolved_tiers().items()
    }
    reference = model.reference_tier()
    return AliasRoute(
        name=alias,
        tiers=tiers,
        default_tier=model.first_tier(),
        reference=Target(reference.backend, reference.model)
        if isinstance(reference, ReferenceConfig)
        else reference,
        fallbacks=tuple(
            ("tier", step.tier) if step.tier is not None else ("alias", step.alias or "")
            for step in model.fallback_steps()
        ),
        retry=RetryPolicy(**model.retry.model_dump()),
        kv_isolation=model.kv_isolation if _salted(tiers, config) else "shared",
    )


def _salted(tiers: Mapping[str, Tier], config: Config) -> bool:
    """Does a tenant's KV salt matter to this alias: a replica's engine takes it, or a tier
    routes by prefix (which keys on it)? If not, no call works one out."""
    return any(
        tier.strategy == "prefix_aware" or capabilities_of(config.backends[r.backend]).cache_salt
        for tier in tiers.values()
        for r in tier.replicas
    )


def _reference(route: AliasRoute) -> tuple[Target, ...]:
    """What a plain proxy would have used for this alias: its reference tier's replicas, or the
    one backend and model the config names."""
    if isinstance(route.reference, Target):
        return (route.reference,)
    return tuple(r.target for r in route.tiers[route.reference].replicas)


def _limits(
    config: Config,
    router: Router,
    prices: PriceTable,
    deps: RuntimeDeps,
    reloading: bool,
) -> LimitsContext:
    limits = config.limits
    if reloading:
        _warn_if_store_changed(limits, deps.ledger)
    rates = tuple(
        RateRule(r.name, r.scope, r.subject, r.model, r.rpm, r.tpm) for r in limits.rate_limits
    )
    return LimitsContext(
        ledger=deps.ledger,
        prices=prices,
        budgets=config.limits.budget_rules(),
        rates=rates,
        sql_budgets=deps.sql_budgets,
        zone=ZoneInfo(limits.timezone),
        reach=router.reachable,
        default_max_tokens=limits.default_max_tokens,
        budget_status=limits.budget_status,
        prompt_margin=limits.prompt_margin,
        overhead=deps.overhead,
        overhead_prior=limits.prompt_overhead_tokens,
        default_alert_at=limits.alerts.default_alert_at,
        alerts=deps.alerts,
    )


def _warn_if_store_changed(limits: LimitsConfig, ledger: Ledger) -> None:
    kind = "redis" if ledger.shared else "memory"
    if limits.store != kind or (
        limits.on_store_failure != ledger.on_failure or ledger.zone.key != limits.timezone
    ):
        log.warning(
            "limits.store, on_store_failure and timezone take effect on restart; "
            "the running gateway keeps store=%s, on_store_failure=%s, timezone=%s",
            kind,
            ledger.on_failure,
            ledger.zone.key,
        )


def _authenticator(auth: AuthConfig, env: Mapping[str, str]) -> Authenticator:
    if auth.mode == "open":
        return OpenAccess(Principal(key_id="open", name="open"))
    principals = {}
    for key in auth.keys:
        digest = key.key_sha256 or key_digest(env[key.key_env or ""])
        principals[digest] = Principal(
            key_id=digest[:16],
            name=key.name,
            user=key.user,
            team=key.team,
            org=key.org,
            tags=key.tags,
            models=frozenset(key.models) if key.models is not None else None,
        )
    return StaticKeys(principals)


class RuntimeRef:
    """The one mutable reference: which Runtime new calls start on."""

    __slots__ = ("current",)

    def __init__(self, runtime: Runtime) -> None:
        self.current = runtime
