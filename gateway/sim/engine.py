"""One simulated GPU replica: batch slots with a wait queue, prefill cost of uncached tokens,
decode cost that grows with the batch, and a prefix cache.

All durations are computed in *model time* (what a real GPU would take) and slept as
model time x time_scale against deadlines, so sleeping overhead never accumulates and every
ratio holds at any scale. time_scale 0 never sleeps.
"""

from __future__ import annotations

import asyncio
import bisect
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field

from gateway.sim.config import SimModel
from gateway.sim.kvcache import PrefixCache, block_hashes

LATENCY_BUCKETS = (
    0.005,
    0.01,
    0.02,
    0.04,
    0.06,
    0.08,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
    20.0,
    40.0,
    80.0,
)


@dataclass(slots=True)
class Histogram:
    buckets: tuple[float, ...] = LATENCY_BUCKETS
    counts: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))
    total: float = 0.0
    count: int = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.total += value
        self.count += 1


@dataclass(slots=True)
class ReplicaStats:
    running: int = 0
    waiting: int = 0
    prefix_queries: int = 0
    prefix_hits: int = 0
    prompt_tokens: int = 0
    generation_tokens: int = 0
    finished: dict[str, int] = field(default_factory=dict)
    aborted: int = 0
    ttft: Histogram = field(default_factory=Histogram)
    e2e: Histogram = field(default_factory=Histogram)


@dataclass(slots=True)
class Timing:
    """Model-time figures of one request, reported to the client in x-sim-* headers."""

    queue_s: float = 0.0
    prefill_s: float = 0.0
    decode_s: float = 0.0
    cached_tokens: int = 0


class Replica:
    def __init__(self, model: SimModel, index: int, time_scale: float) -> None:
        self.model = model
        self.index = index
        self.time_scale = time_scale
        self.cache = PrefixCache(model.kv_blocks)
        self.stats = ReplicaStats()
        self._slots = asyncio.Semaphore(model.slots)

    def restart(self) -> None:
        """An engine restart: the KV cache starts empty (requests in flight finish)."""
        self.cache = PrefixCache(self.model.kv_blocks)

    @property
    def load(self) -> int:
        return self.stats.running + self.stats.waiting

    async def generate(
        self,
        prompt_ids: Sequence[int],
        salt: str | None,
        output_tokens: int,
        step: int,
        timing: Timing,
    ) -> AsyncGenerator[int, None]:
        """Yields the tokens generated so far: once after prefill (0), then every `step` tokens,
        filling in `timing` as it goes. Closing it early aborts the request and frees its slot."""
        loop = asyncio.get_running_loop()
        began = loop.time()
        stats = self.stats
        stats.waiting += 1
        try:
            await self._slots.acquire()
        finally:
            stats.waiting -= 1
        stats.running += 1
        timing.queue_s = (loop.time() - began) / self.time_scale if self.time_scale else 0.0
        done = 0
        try:
            clock = _Deadline(loop, self.time_scale)
            timing.cached_tokens = self._prefill(prompt_ids, salt)
            uncached = len(prompt_ids) - timing.cached_tokens
            timing.prefill_s = uncached * self.model.prefill_ms_per_token / 1000 / self.model.speed
            await clock.advance(timing.prefill_s)
            stats.ttft.observe(loop.time() - began)
            yield 0
            while done < output_tokens:
                batch = min(step, output_tokens - done)
                per_token = self._decode_seconds_per_token()
                timing.decode_s += per_token * batch
                await clock.advance(per_token * batch)
                done += batch
                stats.generation_tokens += batch
                yield done
            stats.e2e.observe(loop.time() - began)
        except (GeneratorExit, asyncio.CancelledError):
            stats.aborted += 1
            raise
        finally:
            stats.running -= 1
            self._slots.release()

    def finish(self, reason: str) -> None:
        self.stats.finished[reason] = self.stats.finished.get(reason, 0) + 1

    def _prefill(self, prompt_ids: Sequence[int], salt: str | None) -> int:
        size = self.model.block_tokens
        hashes = block_hashes(prompt_ids, size, salt)
        # As vLLM: the last prompt token is always recomputed, so a full hit still prefills one.
        usable = (len(prompt_ids) - 1) // size
        hit = min(self.cache.match(hashes), usable)
        self.cache.insert(hashes)
        cached = hit * size
        self.stats.prefix_queries += len(prompt_ids)
        self.stats.prefix_hits += cached
        self.stats.prompt_tokens += len(prompt_ids)
        return cached

    def _decode_seconds_per_token(self) -> float:
        batch_factor = 1.0 + self.model.decode_batch_penalty * (self.stats.running - 1)
        return self.model.decode_ms_per_token * batch_factor / 1000 / self.model.speed


class _Deadline:
    """Sleeps to cumulative deadlines (model seconds x scale) measured from one start."""

    __slots__ = ("_loop", "_scale", "_target")

    def __init__(self, loop: asyncio.AbstractEventLoop, scale: float) -> None:
        self._loop = loop
        self._scale = scale
        self._target = loop.time()

    async def advance(self, model_seconds: float) -> None:
        if self._scale == 0:
            return
        self._target += model_seconds * self._scale
        delay = self._target - self._loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
