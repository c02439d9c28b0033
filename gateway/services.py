"""Everything long-lived, built once in the app's lifespan and passed in: no globals."""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

import httpx
from sqlalchemy import Engine

from gateway.accounting.alerts import AlertWatch
from gateway.accounting.ledger import Ledger
from gateway.accounting.tokens import TokenCounter
from gateway.admin.accounts import Accounts
from gateway.alerting import Alerter
from gateway.audit.service import AuditLog
from gateway.audit.signing import signing_key
from gateway.auth import KeyRing
from gateway.backends.aiohttp_transport import AiohttpTransport
from gateway.batches.runner import BatchRunner
from gateway.cache.stage import ResponseCache
from gateway.cache.stores import EntryStore, MemoryEntries
from gateway.config.accounting_schema import DatabaseConfig, LimitsConfig
from gateway.config.loader import LoadedConfig
from gateway.config.reload import Reloader
from gateway.config.schema import Config
from gateway.pipeline import Pipeline
from gateway.recorder import Recorder
from gateway.routing.state import ReplicaStates
from gateway.routing.watch import Watcher
from gateway.runtime import Runtime, RuntimeDeps, RuntimeRef, build_runtime
from gateway.settings import Settings
from gateway.side_calls import SideCaller
from gateway.sinks.fanout import SinkFanout
from gateway.sinks.logsink import LogSink
from gateway.stores.counters import CounterStore
from gateway.stores.memory import MemoryCounters
from gateway.stores.migrate import SCHEMA_HEAD, check_current, current_revision, upgrade
from gateway.stores.responses import prune
from gateway.stores.secret import data_dir_of, server_secret
from gateway.stores.sql import make_engine
from gateway.telemetry.service import Telemetry
from gateway.telemetry.spans import Peer, peer_of

if TYPE_CHECKING:
    from gateway.routing.prefix_feed import PrefixFeed

log = logging.getLogger("gateway.services")


@dataclass(frozen=True)
class Services:
    """What a running gateway process holds for its whole life, built in the app's lifespan
    and closed in reverse order: the upstream connection pool, the counters and ledger, the
    accounts refreshed from SQL, the audit log, telemetry and sinks, and the current Runtime
    (behind the reloader). Passed to handlers explicitly; nothing here is global."""

    settings: Settings
    transport: httpx.AsyncBaseTransport
    tokens: TokenCounter
    sinks: SinkFanout
    runtime: RuntimeRef
    reloader: Reloader[Runtime]
    pipeline: Pipeline
    ledger: Ledger
    accounts: Accounts
    audit: AuditLog | None = None
    telemetry: Telemetry | None = None
    admin_key: str | None = None
    dashboard_key: str | None = None
    request_ids: RequestIds = field(default_factory=lambda: RequestIds())
    watcher: Watcher | None = None
    prefix_feed: PrefixFeed | None = None
    alerter: Alerter | None = None
    batches: BatchRunner | None = None
    housekeeping: list[asyncio.Task[None]] = field(default_factory=list)

    @classmethod
    async def start(
        cls, settings: Settings, loaded: LoadedConfig, tokens: TokenCounter | None = None
    ) -> Services:
        config = loaded.config
        transport = upstream_transport(settings.pool_connections, settings.upstream_transport)
        tokens = TokenCounter() if tokens is None else tokens
        ring, ledger, accounts = await start_accounting(settings, config)
        audit = await start_audit(config, accounts.engine)
        side_calls = SideCaller()
        cache = response_cache(config)
        replicas = ReplicaStates()
        feed = prefix_feed(config, replicas)
        alerter = Alerter(
            accounts.engine,
            lambda: ref.current.config.limits.alerts,
            audit.journal if audit else None,
        )
        deps = RuntimeDeps(
            transport=transport,
            tokens=tokens,
            ring=ring,
            ledger=ledger,
            sql_budgets=accounts.current_budgets,
            side_calls=side_calls,
            cache=cache,
            replicas=replicas,
            alerts=AlertWatch(alerter),
        )
        ref = RuntimeRef(build_runtime(loaded, deps))
        telemetry = (
            Telemetry(config.telemetry, peers=Peers(ref), engine=accounts.engine)
            if config.telemetry.enabled
            else None
        )
        sinks = SinkFanout(
            [
                *(
                    [LogSink(json_lines=settings.json_logs(config.logging.json_lines))]
                    if config.logging.requests
                    else []
                ),
                *([telemetry] if telemetry is not None else []),
            ],
            capacity=config.server.sink_queue_size,
        )
        watcher = Watcher(lambda: ref.current.watched)

        def rebuild(new: LoadedConfig, old: Runtime | None) -> Runtime:
            runtime = build_runtime(new, deps, previous=old)
            watcher.changed()
            return runtime

        pipeline = Pipeline(
            Recorder(sinks, tokens, audit.journal if audit else None),
            telemetry.starter if telemetry is not None else None,
        )
        reloader: Reloader[Runtime] = Reloader(
            loaded.source, ref, rebuild, config.server.reload_poll_seconds
        )
        services = cls(
            settings,
            transport,
            tokens,
            sinks,
            ref,
            reloader,
            pipeline,
            ledger,
            accounts,
            audit,
            telemetry,
            os.environ.get(config.admin.key_env) or None,
            _env(config.telemetry.dashboard.key_env),
            watcher=watcher,
            prefix_feed=feed,
            alerter=alerter,
            batches=BatchRunner(accounts.engine, pipeline, lambda: ref.current, ledger),
        )
        watcher.start()
        alerter.start()
        if config.batch.enabled and services.batches is not None:
            services.batches.start()
        services.housekeeping.append(
            asyncio.get_running_loop().create_task(_prune_responses(accounts.engine))
        )
        cache.start()
        if feed is not None:
            feed.start()
        side_calls.bind(services.pipeline, lambda: ref.current)
        sinks.start()
        if telemetry is not None:
            telemetry.start()
        reloader.start()
        return services

    async def aclose(self) -> None:
        await self.reloader.aclose()
        if self.alerter is not None:
            await self.alerter.aclose()
        if self.batches is not None:
            await self.batches.aclose()
        for task in self.housekeeping:
            task.cancel()
        await asyncio.gather(*self.housekeeping, return_exceptions=True)
        if self.watcher is not None:
            await self.watcher.aclose()
        await self.sinks.aclose()
        if self.audit is not None:
            await asyncio.to_thread(self.audit.close)
        await self.runtime.current.aclose()
        await self.runtime.current.cache.shared.aclose()
        if self.prefix_feed is not None:
            await self.prefix_feed.aclose()
        await self.transport.aclose()
        await self.ledger.flush()  # last settlements and spend in, before counters are persisted
        await self.accounts.aclose()
        await self.ledger.aclose()


async def _prune_responses(engine: Engine, every_s: float = 900.0) -> None:
    """Stored Responses API responses past their retention go (a wake-up every 15 minutes;
    reads already treat them as gone)."""
    while True:
        await asyncio.sleep(every_s)
        try:
            pruned = await asyncio.to_thread(prune, engine, time.time())
        except Exception:
            log.exception("pruning stored responses failed; trying again later")
            continue
        if pruned:
            log.info("%d stored responses past their retention deleted", pruned)


def _env(name: str | None) -> str | None:
    return (os.environ.get(name) or None) if name else None


class Peers:
    """Backend name -> who it is, for span attributes, as the running config says."""

    def __init__(self, ref: RuntimeRef) -> None:
        self._ref = ref
        self._known: dict[tuple[int, str], Peer | None] = {}

    def __call__(self, backend: str) -> Peer | None:
        runtime = self._ref.current
        key = (runtime.generation, backend)
        if key not in self._known:
            if len(self._known) > 1000:
                self._known.clear()
            config = runtime.backend_configs.get(backend)
            self._known[key] = peer_of(config) if config is not None else None
        return self._known[key]


class RequestIds:
    """32-hex-digit ids, unique across processes and restarts: a random per-process prefix
    plus a counter (no uuid4 per call: it costs more than the rest of the id handling)."""

    __slots__ = ("_counter", "_prefix")

    def __init__(self) -> None:
        self._prefix = os.urandom(8).hex()
        self._counter = itertools.count(int.from_bytes(os.urandom(4), "big"))

    def __call__(self) -> str:
        return f"{self._prefix}{next(self._counter) & 0xFFFFFFFFFFFFFFFF:016x}"


async def start_accounting(settings: Settings, config: Config) -> tuple[KeyRing, Ledger, Accounts]:
    """Keys and budgets from SQL, the counters budgets are checked against, and the background
    work that keeps them current (refresh, settlement, persistence)."""
    url = os.environ.get("TOLLGATE_DATABASE_URL") or config.database.url
    engine = await asyncio.to_thread(
        prepare_database, url, config.database.auto_upgrade, config.database
    )
    ring = KeyRing(server_secret(config.keys.secret_env, data_dir_of(url)))
    store = counter_store(config.limits)
    ledger = Ledger(
        store,
        config.limits.on_store_failure,
        ZoneInfo(config.limits.timezone),
        hold_s=config.limits.hold_seconds,
    )
    # One process's embedded counters are persisted; several workers' would overwrite each other.
    persisted = store if isinstance(store, MemoryCounters) and settings.workers == 1 else None
    if persisted is not None:
        persisted.track_dirty = True
    accounts = Accounts(engine, ring, config.keys.refresh_seconds, persisted)
    await accounts.start()
    ledger.start()
    return ring, ledger, accounts


async def start_audit(config: Config, engine: Engine) -> AuditLog | None:
    if not config.audit.enabled:
        return None
    url = engine.url.render_as_string(hide_password=False)
    data_dir = data_dir_of(url)
    key = signing_key(config.audit.signing_key_env, config.keys.secret_env, data_dir)
    audit = await asyncio.to_thread(AuditLog.open, config.audit, url, key, data_dir)
    audit.start_monitor()
    return audit


def prefix_feed(config: Config, replicas: ReplicaStates) -> PrefixFeed | None:
    """The fleet's shared prefix index, when configured (a change applies at restart)."""
    share = config.routing.prefix_aware.share
    if share is None:
        return None
    from gateway.routing.prefix_feed import PrefixFeed  # redis-py, only if used

    return PrefixFeed(
        share.redis_url, share.key_prefix, replicas, sync_s=share.sync_ms / 1000,
        timeout_s=share.timeout_ms / 1000, retain=share.retain,
        capacity_tokens=config.routing.prefix_aware.kv_capacity_tokens,
        cluster=share.redis_cluster,
    )  # fmt: skip


def response_cache(config: Config) -> ResponseCache:
    """The cache's store (in-process, or Redis for a fleet); a change applies at restart."""
    settings = config.cache
    if settings.store == "redis":
        from gateway.cache.redis_store import RedisEntries

        store: EntryStore = RedisEntries(
            settings.redis_url, settings.key_prefix, settings.timeout_ms / 1000,
            settings.l1_entries, cluster=settings.redis_cluster,
        )  # fmt: skip
    else:
        store = MemoryEntries()
    return ResponseCache(store, sync_seconds=settings.sync_seconds)


def counter_store(limits: LimitsConfig) -> CounterStore:
    if limits.store == "redis":
        # redis-py costs MBs of RSS: imported only if used.
        from gateway.stores.redis_counters import RedisCounters

        return RedisCounters(
            limits.redis_url,
            limits.key_prefix,
            limits.store_timeout_ms / 1000,
            limits.redis_max_connections,
            cluster=limits.redis_cluster,
        )
    return MemoryCounters()


def prepare_database(
    url: str, auto_upgrade: bool | None, database: DatabaseConfig | None = None
) -> Engine:
    """The engine, with the schema brought up to date where that is safe to do unasked
    (SQLite, the embedded default); a shared database is upgraded by `tollgate db upgrade`."""
    sizes = database or DatabaseConfig()
    engine = make_engine(url, pool_size=sizes.pool_size, max_overflow=sizes.max_overflow)
    if current_revision(engine) == SCHEMA_HEAD:
        return engine
    if auto_upgrade if auto_upgrade is not None else engine.dialect.name == "sqlite":
        upgrade(engine)
    else:
        check_current(engine)
    return engine


def upstream_transport(max_connections: int, kind: str = "aiohttp") -> httpx.AsyncBaseTransport:
    """The one pooled transport every network backend shares (keep-alive, connection limit).

    Adapters call it with plain httpx Requests, without AsyncClient.send's auth, redirect,
    cookie and hook layers, which a proxy never uses (~0.1-0.25 ms CPU per request).
    aiohttp's transport under the httpx API is the default: httpx's own costs several times
    the CPU per proxied request (docs/benchmarks.md "Upstream transport", "Where the time
    goes")."""
    limits = httpx.Limits(
        max_connections=max_connections,
        max_keepalive_connections=max_connections,
        keepalive_expiry=30.0,
    )
    if kind == "httpx":
        return httpx.AsyncHTTPTransport(limits=limits)
    return AiohttpTransport(limits)
