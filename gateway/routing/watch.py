"""Active health checks and engine load, polled off the request path.

For each backend that asks for them (`health:`, `load_metrics:` in its config), one loop GETs
its health path and its Prometheus endpoint on their intervals. A failed health check takes the
backend's replicas out of rotation until a check passes again (a circuit it opened; circuits
that calls opened still need their half-open probe). The engine's own gauges (vLLM's names)
become each replica's `engine` load, which `least_outstanding` reads beside the calls in
flight: other gateways and clients send to the same engine. A backend with neither configured
costs nothing: with nothing to watch, the loop waits without waking.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

from gateway.backends.base import Backend
from gateway.config.backends_schema import HealthCheck, LoadMetrics
from gateway.errors import TollgateError
from gateway.routing.state import EngineLoad, ReplicaState

log = logging.getLogger("gateway.routing")

RUNNING = "vllm:num_requests_running"
WAITING = "vllm:num_requests_waiting"
KV_USAGE = "vllm:kv_cache_usage_perc"
CACHE_CONFIG = "vllm:cache_config_info"  # labels num_gpu_blocks and block_size


@dataclass(frozen=True, slots=True)
class Watched:
    """One backend to watch and the replicas (its models) whose state the checks set."""

    backend: Backend
    health: HealthCheck | None
    load: LoadMetrics | None
    states: tuple[ReplicaState, ...]


def parse_load(text: str, model: str | None) -> EngineLoad | None:
    """The engine's running/waiting/KV gauges for `model` (all models when the exposition
    does not label them), summed over the engine's own replicas; None if it reports none."""
    running = waiting = 0.0
    kv: list[float] = []
    capacity = 0
    seen = False
    for family in text_string_to_metric_families(text):
        if family.name in (CACHE_CONFIG, CACHE_CONFIG.removesuffix("_info")):
            capacity += sum(
                _capacity(x.labels) for x in family.samples
                if model is None or x.labels.get("model_name") in (None, model)
            )  # fmt: skip
            continue
        if family.name not in (RUNNING, WAITING, KV_USAGE):
            continue
        for sample in family.samples:
            named = sample.labels.get("model_name")
            if model is not None and named is not None and named != model:
                continue
            seen = True
            if family.name == RUNNING:
                running += sample.value
            elif family.name == WAITING:
                waiting += sample.value
            else:
                kv.append(sample.value)
    if not seen:
        return None
    usage = max(kv) if kv else None
    return EngineLoad(running, waiting, usage, time.monotonic(), capacity or None)


def _capacity(labels: dict[str, str]) -> int:
    """KV tokens one engine holds: its GPU blocks x tokens per block (0 if not given)."""
    try:
        return int(labels.get("num_gpu_blocks", 0)) * int(labels.get("block_size", 0))
    except ValueError:
        return 0


class Watcher:
    """Runs the checks of whatever the current runtime asks to watch (`targets`, read again
    each round, so a reload's new backends are watched from the next round)."""

    def __init__(self, targets: Callable[[], Sequence[Watched]], tick: float = 0.25) -> None:
        self._targets = targets
        self._tick = tick
        self._due: dict[tuple[int, str], float] = {}
        self._wake = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name="replica-watcher")

    async def aclose(self) -> None:
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            await self._task

    def changed(self) -> None:
        """The runtime changed (a reload): look at what to watch again."""
        self._wake.set()

    async def run(self) -> None:
        while not self._stopping:
            targets = [t for t in self._targets() if t.health or t.load]
            if not targets:
                self._wake.clear()
                await self._wake.wait()  # nothing to watch: sleep until a reload
                continue
            now = time.monotonic()
            jobs = [job for t in targets for job in self._due_jobs(t, now)]
            if jobs:
                await asyncio.gather(*jobs)
            try:
                await asyncio.wait_for(self._wake.wait(), self._tick)
            except TimeoutError:
                pass
            self._wake.clear()

    def _due_jobs(self, target: Watched, now: float) -> list[asyncio.Future[None]]:
        jobs: list[asyncio.Future[None]] = []
        for kind, every in (
            ("health", target.health.interval_seconds if target.health else None),
            ("load", target.load.interval_seconds if target.load else None),
        ):
            if every is None:
                continue
            key = (id(target.backend), kind)
            if self._due.get(key, 0.0) <= now:
                self._due[key] = now + every
                work = self._health(target) if kind == "health" else self._load(target)
                jobs.append(asyncio.ensure_future(work))
        return jobs

    async def _health(self, target: Watched) -> None:
        check = target.health
        assert check is not None
        try:
            status, _ = await target.backend.probe(check.path, check.timeout_seconds)
            ok, why = 200 <= status < 300, f"HTTP {status}"
        except TollgateError as exc:
            ok, why = False, exc.detail or exc.message
        for state in target.states:
            if state.checked(ok, check.interval_seconds) and not ok:
                log.warning(
                    "health check of backend %s failed (%s): out of rotation",
                    target.backend.name,
                    why,
                )

    async def _load(self, target: Watched) -> None:
        metrics = target.load
        assert metrics is not None
        try:
            status, body = await target.backend.probe(metrics.path, 2.0)
            text = body.decode("utf-8", "replace") if status == 200 else ""
        except TollgateError:
            text = ""
        for state in target.states:
            try:
                state.engine = parse_load(text, state.model) if text else None
            except ValueError:  # not the Prometheus text format
                state.engine = None
