"""Everything long-lived, built once in the app's lifespan and passed in: no globals."""

from __future__ import annotations

import itertools
import logging
import os
from dataclasses import dataclass, field

import httpx

from gateway.accounting.tokens import TokenCounter
from gateway.backends.aiohttp_transport import AiohttpTransport
from gateway.backends.base import Backend
from gateway.config.loader import LoadedConfig
from gateway.config.reload import Reloader
from gateway.config.runtime import RuntimeDeps, RuntimeRef, build_runtime
from gateway.pipeline import Pipeline
from gateway.settings import Settings
from gateway.sinks.fanout import SinkFanout
from gateway.sinks.logsink import LogSink

log = logging.getLogger("gateway.services")


@dataclass(frozen=True)
class Services:
    settings: Settings
    transport: httpx.AsyncBaseTransport
    tokens: TokenCounter
    sinks: SinkFanout
    runtime: RuntimeRef
    reloader: Reloader
    pipeline: Pipeline
    retired: list[Backend] = field(default_factory=list)
    request_ids: RequestIds = field(default_factory=lambda: RequestIds())

    @classmethod
    async def start(cls, settings: Settings, loaded: LoadedConfig) -> Services:
        transport = upstream_transport(settings.pool_connections, settings.upstream_transport)
        tokens = TokenCounter()
        deps = RuntimeDeps(transport=transport, tokens=tokens)
        ref = RuntimeRef(build_runtime(loaded, deps))
        config = loaded.config
        sinks = SinkFanout(
            [LogSink(json_lines=settings.json_logs(config.logging.json_lines))]
            if config.logging.requests
            else [],
            capacity=config.server.sink_queue_size,
        )
        retired: list[Backend] = []
        reloader = Reloader(
            loaded.source, ref, deps, config.server.reload_poll_seconds, on_retire=retired.extend
        )
        services = cls(settings, transport, tokens, sinks, ref, reloader, Pipeline(sinks), retired)
        sinks.start()
        reloader.start()
        return services

    async def aclose(self) -> None:
        await self.reloader.aclose()
        await self.sinks.aclose()
        runtime = self.runtime.current
        await runtime.chain.aclose()
        for backend in [*runtime.backends.values(), *self.retired]:
            await backend.aclose()
        await self.transport.aclose()


class RequestIds:
    """32-hex-digit ids, unique across processes and restarts: a random per-process prefix
    plus a counter (uuid4 per call costs more than the rest of the id handling together)."""

    __slots__ = ("_counter", "_prefix")

    def __init__(self) -> None:
        self._prefix = os.urandom(8).hex()
        self._counter = itertools.count(int.from_bytes(os.urandom(4), "big"))

    def __call__(self) -> str:
        return f"{self._prefix}{next(self._counter) & 0xFFFFFFFFFFFFFFFF:016x}"


def upstream_transport(max_connections: int, kind: str = "aiohttp") -> httpx.AsyncBaseTransport:
    """The one pooled transport every network backend shares (keep-alive, connection limit).

    Adapters call it with plain httpx Requests, without AsyncClient.send's auth, redirect,
    cookie and hook layers, which a proxy never uses: measured ~0.1-0.25 ms CPU per request.
    aiohttp's transport under the httpx API is the default: httpx's own costs ~8x the CPU per
    proxied request here (docs/benchmarks.md)."""
    limits = httpx.Limits(
        max_connections=max_connections,
        max_keepalive_connections=max_connections,
        keepalive_expiry=30.0,
    )
    if kind == "httpx":
        return httpx.AsyncHTTPTransport(limits=limits)
    return AiohttpTransport(limits)
