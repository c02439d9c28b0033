"""A validated config turned into live objects: backends, router, policy chain, authenticator.

A Runtime is immutable once built; reload builds a new one and swaps a single reference, so
calls in flight finish on the Runtime they started with. Backends whose config did not change
are carried over (their pools, semaphores and simulator state survive a reload).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

import httpx

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
from gateway.backends.anthropic import AnthropicBackend as AnthropicAdapter
from gateway.backends.base import Backend
from gateway.backends.openai_compat import OpenAICompatBackend
from gateway.backends.scrub import Scrubber
from gateway.backends.sim import SimBackend as SimBackendAdapter
from gateway.call import Principal, Target
from gateway.config.accounting_schema import LimitsConfig
from gateway.config.loader import LoadedConfig
from gateway.config.prices import price_table
from gateway.config.schema import (
    AnthropicBackend,
    AuthConfig,
    AzureOpenAIBackend,
    Config,
    OpenAIBackend,
    SimBackend,
    Timeouts,
)
from gateway.policies.base import PluginContext
from gateway.policies.budgets import BudgetGuard
from gateway.policies.chain import ChainEntry, PolicyChain
from gateway.routing.balancer import RoundRobin
from gateway.stores.budgets import BudgetRule

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


class CallCount:
    """Calls running on one Runtime, so a retired one is closed only once they have finished
    (its backends' connections and its plugins' resources are still in use until then)."""

    __slots__ = ("_idle", "running")

    def __init__(self) -> None:
        self.running = 0
        self._idle: asyncio.Event | None = None

    def enter(self) -> None:
        self.running += 1

    def leave(self) -> None:
        self.running -= 1
        if self.running == 0 and self._idle is not None:
            self._idle.set()

    async def idle(self) -> None:
        if self.running == 0:
            return
        self._idle = asyncio.Event()
        await self._idle.wait()


@dataclass(frozen=True, slots=True)
class Runtime:
    loaded: LoadedConfig
    backends: Mapping[str, Backend]
    backend_configs: Mapping[str, object]
    router: RoundRobin
    chain: PolicyChain
    auth: Authenticator
    generation: int
    costing: Costing
    calls: CallCount = field(default_factory=CallCount)
    # Removes this config's upstream secrets from anything sent to clients, logged or recorded.
    scrub: Scrubber = field(default_factory=Scrubber)

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
    backends: dict[str, Backend] = {}
    for name, backend_config in config.backends.items():
        if previous is not None and previous.backend_configs.get(name) == backend_config:
            backends[name] = previous.backends[name]
        else:
            backends[name] = _backend(name, backend_config, deps, environ)
    models = {
        alias: tuple(Target(t.backend, t.model, t.tier) for t in model.targets)
        for alias, model in config.models.items()
    }
    prices = price_table(config)
    costing = Costing(
        prices,
        {alias: targets[0] for alias, targets in models.items()},
        frozenset(n for n, b in config.backends.items() if isinstance(b, SimBackend)),
    )
    context = PluginContext(
        tokens=deps.tokens,
        models=frozenset(config.models),
        limits=_limits(config, models, prices, deps, reloading=previous is not None),
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
        router=RoundRobin(models),
        chain=chain,
        auth=WithVirtualKeys(deps.ring, _authenticator(config.auth, environ)),
        generation=(previous.generation + 1) if previous else 1,
        costing=costing,
        scrub=Scrubber(_secrets(config, environ)),
    )


def _secrets(config: Config, env: Mapping[str, str]) -> list[str]:
    """Every credential this config's backends send upstream."""
    out = []
    for backend in config.backends.values():
        if isinstance(backend, SimBackend):
            continue
        if backend.api_key_env and env.get(backend.api_key_env):
            out.append(env[backend.api_key_env])
        out.extend(v for k, v in backend.headers.items() if k.lower() in _SECRET_HEADERS)
    return out


_SECRET_HEADERS = {"authorization", "api-key", "x-api-key", "proxy-authorization"}


def _limits(
    config: Config,
    models: Mapping[str, tuple[Target, ...]],
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
        budgets=yaml_budgets(config),
        rates=rates,
        sql_budgets=deps.sql_budgets,
        zone=ZoneInfo(limits.timezone),
        targets=models,
        default_max_tokens=limits.default_max_tokens,
        budget_status=limits.budget_status,
        prompt_margin=limits.prompt_margin,
        overhead=deps.overhead,
        overhead_prior=limits.prompt_overhead_tokens,
    )


def yaml_budgets(config: Config) -> tuple[BudgetRule, ...]:
    return tuple(b.rule("yaml") for b in config.limits.budgets)


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


def _timeout(t: Timeouts) -> httpx.Timeout:
    return httpx.Timeout(connect=t.connect, read=t.read, write=t.read, pool=t.connect)


def _backend(
    name: str,
    config: OpenAIBackend | AnthropicBackend | AzureOpenAIBackend | SimBackend,
    deps: RuntimeDeps,
    env: Mapping[str, str],
) -> Backend:
    if isinstance(config, SimBackend):
        return SimBackendAdapter(
            name,
            config,
            tokens=deps.tokens,
            timeout=_timeout(config.timeouts),
            total_timeout=config.timeouts.total,
        )
    api_key = env.get(config.api_key_env) if config.api_key_env else None
    common = {
        "transport": deps.transport,
        "tokens": deps.tokens,
        "timeout": _timeout(config.timeouts),
        "total_timeout": config.timeouts.total,
        "max_connections": config.limits.max_connections,
    }
    if isinstance(config, AnthropicBackend):
        return AnthropicAdapter(
            name,
            base_url=config.base_url,
            api_key=api_key,
            version=config.version,
            headers=config.headers,
            **common,  # type: ignore[arg-type]
        )
    if isinstance(config, AzureOpenAIBackend):
        return OpenAICompatBackend(
            name,
            base_url=config.endpoint,
            headers={**config.headers, **({"api-key": api_key} if api_key else {})},
            url_for=azure_urls(config),
            **common,  # type: ignore[arg-type]
        )
    return OpenAICompatBackend(
        name,
        base_url=config.base_url,
        api_key=api_key,
        headers=config.headers,
        **common,  # type: ignore[arg-type]
    )


def azure_urls(config: AzureOpenAIBackend) -> Callable[[str, str], str]:
    def url_for(endpoint: str, model: str) -> str:
        deployment = config.deployments.get(model, model)
        path = endpoint.replace(".", "/")  # chat.completions -> chat/completions
        return (
            f"{config.endpoint}/openai/deployments/{deployment}/{path}"
            f"?api-version={config.api_version}"
        )

    return url_for


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
