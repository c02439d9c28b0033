"""Live replica state: what a strategy and the health checks read. It belongs to Services, so
it survives config reloads; a replica whose backend's config changed starts afresh.

In-flight counts are taken before dispatch and given back when the call is done with the
replica (a stream: when it closes), on every path: the load signal is what the worst router
bugs elsewhere came from (a path that never counted sent everything to one replica).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Literal

from gateway.routing.prefix import IndexSharing, PrefixIndex, PrefixStats

Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class CircuitSettings:
    """When a replica leaves rotation and for how long (config: `routing.circuit`)."""

    failures: int = 5
    error_rate: float = 0.5
    window: int = 20
    min_calls: int = 10
    cooldown_seconds: float = 10.0
    max_cooldown_seconds: float = 120.0


CircuitState = Literal["closed", "open", "half_open"]
_EWMA = 0.2  # weight of the newest sample


@dataclass(slots=True)
class EngineLoad:
    """What the engine itself reports (its Prometheus endpoint), when it is polled."""

    running: float = 0.0
    waiting: float = 0.0
    kv_cache_usage: float | None = None
    at: float = 0.0
    kv_capacity_tokens: int | None = None  # vllm:cache_config_info's blocks x block size


@dataclass(slots=True)
class ReplicaStats:
    calls: int = 0
    failures: int = 0
    retries: int = 0  # failures here after which the call was tried again
    fallbacks: int = 0  # calls served here from a fallback step of their plan
    circuit_opens: int = 0


@dataclass(slots=True)
class ReplicaState:
    backend: str
    model: str
    signature: str  # the backend's config as built: a change resets the state
    circuit_config: CircuitSettings
    clock: Clock = time.monotonic
    in_flight: int = 0
    latency_ms: float | None = None  # EWMA of whole calls
    ttft_ms: float | None = None  # EWMA of first streamed bytes
    recent: deque[bool] = field(default_factory=deque)  # True: a failure
    consecutive_failures: int = 0
    circuit: CircuitState = "closed"
    open_until: float = 0.0
    cooldown: float = 0.0
    probing: bool = False
    engine: EngineLoad | None = None
    stats: ReplicaStats = field(default_factory=ReplicaStats)
    down_by_check: bool = False  # the active health check took it out of rotation
    rate_limited: bool = False  # out of rotation because the upstream said retry-after
    # Prefix-aware routing (prefix.py): what this replica is believed to hold, how right that
    # was, and its KV capacity as configured (the engine's own report wins when polled).
    prefix_index: PrefixIndex | None = None
    prefix_stats: PrefixStats | None = None
    kv_capacity_tokens: int | None = None
    feed: IndexSharing | None = None  # the fleet's shared prefix index (prefix_feed.py)

    @property
    def load(self) -> float:
        """What `least_outstanding` compares: calls in flight here, or what the engine says
        it is running and queueing, whichever is larger (other gateways send to it too)."""
        engine = self.engine
        if engine is None:
            return float(self.in_flight)
        return max(float(self.in_flight), engine.running + engine.waiting)

    def available(self) -> bool:
        """May a call be sent here now? A closed circuit, or an open one whose cooldown is
        over and whose one half-open probe is not yet taken."""
        if self.circuit == "closed":
            return True
        if self.clock() < self.open_until:
            return False
        return not self.probing

    def enter(self) -> None:
        self.in_flight += 1
        self.stats.calls += 1
        if self.circuit != "closed":
            self.probing = True
            self.circuit = "half_open"

    def leave(self) -> None:
        self.in_flight -= 1

    def succeeded(self, latency_ms: float | None = None, ttft_ms: float | None = None) -> None:
        self._remember(False)
        self.consecutive_failures = 0
        if latency_ms is not None:
            self.latency_ms = _ewma(self.latency_ms, latency_ms)
        if ttft_ms is not None:
            self.ttft_ms = _ewma(self.ttft_ms, ttft_ms)
        if self.circuit != "closed":
            self.circuit, self.probing, self.cooldown = "closed", False, 0.0
            self.rate_limited = False

    def failed(self, retry_after: float | None = None, rate_limited: bool = False) -> bool:
        """Counts a failure; True if it opened (or kept open) the circuit. `rate_limited`:
        the upstream answered 429 (its retry-after, if any, is the cooldown)."""
        self.rate_limited = rate_limited
        self.stats.failures += 1
        self._remember(True)
        self.consecutive_failures += 1
        cfg = self.circuit_config
        if self.circuit == "half_open":
            self._open(retry_after, doubling=True)
            return True
        failures = sum(self.recent)
        over_rate = (
            len(self.recent) >= cfg.min_calls and failures / len(self.recent) >= cfg.error_rate
        )
        if self.consecutive_failures >= cfg.failures or over_rate or retry_after is not None:
            self._open(retry_after, doubling=False)
            return True
        return False

    def _open(self, retry_after: float | None, doubling: bool) -> None:
        cfg = self.circuit_config
        if retry_after is not None:
            cooldown = min(max(retry_after, 0.0), cfg.max_cooldown_seconds)
        elif doubling and self.cooldown:
            cooldown = min(self.cooldown * 2, cfg.max_cooldown_seconds)
        else:
            cooldown = cfg.cooldown_seconds
        if self.circuit == "closed":
            self.stats.circuit_opens += 1
        self.circuit, self.cooldown, self.probing = "open", cooldown, False
        self.open_until = self.clock() + cooldown
        self.recent.clear()

    def _remember(self, failure: bool) -> None:
        self.recent.append(failure)
        while len(self.recent) > self.circuit_config.window:
            self.recent.popleft()

    def checked(self, ok: bool, interval: float) -> bool:
        """An active health check's result; True if it changed the replica's rotation. A
        failure keeps it out until a check passes; a pass closes only what a check opened."""
        if ok:
            if self.down_by_check:
                self.down_by_check = False
                self.circuit, self.probing, self.cooldown = "closed", False, 0.0
                return True
            return False
        was_closed = self.circuit == "closed"
        if was_closed:
            self.stats.circuit_opens += 1
        self.down_by_check = True
        self.circuit, self.probing = "open", False
        self.open_until = max(self.open_until, self.clock() + interval * 2)
        return was_closed

    def seconds_closed(self) -> float:
        """How long until an open circuit lets a probe through (0: now)."""
        return max(0.0, self.open_until - self.clock()) if self.circuit != "closed" else 0.0

    def public(self) -> dict[str, object]:
        """For /readyz and the admin API."""
        engine = self.engine
        return {
            "backend": self.backend,
            "model": self.model,
            "circuit": self.circuit,
            "retry_in_seconds": round(self.seconds_closed(), 3),
            "in_flight": self.in_flight,
            "latency_ms": round(self.latency_ms, 1) if self.latency_ms is not None else None,
            "ttft_ms": round(self.ttft_ms, 1) if self.ttft_ms is not None else None,
            "recent_error_rate": round(sum(self.recent) / len(self.recent), 3)
            if self.recent
            else 0.0,
            "engine": None
            if engine is None
            else {
                "running": engine.running,
                "waiting": engine.waiting,
                "kv_cache_usage": engine.kv_cache_usage,
            },
            "calls": self.stats.calls,
            "failures": self.stats.failures,
            "retries": self.stats.retries,
            "fallbacks": self.stats.fallbacks,
            "circuit_opens": self.stats.circuit_opens,
            "prefix": self._prefix_public(),
        }

    def _prefix_public(self) -> dict[str, object] | None:
        index, stats = self.prefix_index, self.prefix_stats
        if index is None or stats is None:
            return None
        return {
            "index_blocks": len(index),
            "capacity_blocks": index.capacity,
            "index_bytes": index.memory_bytes(),
            "resets": index.resets,
            "predicted_cached_tokens": stats.predicted_tokens,
            "reported_cached_tokens": stats.reported_tokens,
            "checked_calls": stats.checked_calls,
            "misses": stats.misses,
        }


def _ewma(previous: float | None, sample: float) -> float:
    return sample if previous is None else previous + _EWMA * (sample - previous)


class ReplicaStates:
    """Every replica's state, by (backend, model), across runtimes."""

    def __init__(self, clock: Clock = time.monotonic) -> None:
        self._clock = clock
        self._states: dict[tuple[str, str], ReplicaState] = {}
        # Shares prefix indexes with the rest of a fleet (prefix_feed.py); None: this
        # gateway's own.
        self.feed: IndexSharing | None = None

    def find(self, key: tuple[str, str]) -> ReplicaState | None:
        return self._states.get(key)

    def get(self, key: tuple[str, str], signature: str, circuit: CircuitSettings) -> ReplicaState:
        """The state for a replica of a runtime being built: kept if its backend is the
        same as before, new otherwise."""
        state = self._states.get(key)
        if state is None or state.signature != signature:
            state = ReplicaState(key[0], key[1], signature, circuit, self._clock)
            state.feed = self.feed
            self._states[key] = state
        state.circuit_config = circuit
        return state

    def retain(self, keys: set[tuple[str, str]]) -> None:
        """Forgets replicas no runtime uses any more (after a reload removed them)."""
        for key in list(self._states):
            if key not in keys and self._states[key].in_flight == 0:
                del self._states[key]

    def __iter__(self) -> Iterator[ReplicaState]:
        return iter(list(self._states.values()))
