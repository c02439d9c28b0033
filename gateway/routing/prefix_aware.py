"""`prefix_aware`: send a call where its prompt's prefix is already in a replica's KV cache,
unless that would pile load on one replica (docs/routing.md, "Prefix-aware routing").

    1. A tier of one replica: it. A prompt shorter than one block: no index work (step 4).
    2. Loads imbalanced beyond the bound (max - min > balance_abs and max > balance_rel x
       min, the SGLang router's rule): the least-loaded replica.
    3. Among the replicas within `load_window` calls of the least-loaded one, the one holding
       the longest prefix, if that is at least `min_match_tokens` and `min_match_ratio` of
       the prompt: a hit is worth queueing behind a few more calls.
    4. Otherwise (a cold prompt), of two replicas, the less loaded (a tie: the first): the one
       rendezvous hashing ranks first for the prompt's start (where prompts that start alike
       go: a system prompt, a document), and the one it ranks first for its conversation (the
       prompt up to its first user turn's end). Every gateway ranks alike, so a fleet sends a
       conversation to the same replica without sharing any state; the second choice keeps a
       common start (a team's system prompt) from pinning all its traffic on one replica.

The chosen replica's index then holds the prompt's blocks (it will, once it has prefilled
them); a retry's replica likewise. What was predicted rides on the call, and the replica's
reported cached tokens are checked against it when the call is recorded (prefix.py).
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import ClassVar

from gateway.call import Call
from gateway.routing.prefix import (
    CHARS_PER_TOKEN,
    PrefixIndex,
    PrefixPrediction,
    PrefixStats,
    PrefixTried,
    block_hashes,
    prompt_parts,
    rendezvous,
)
from gateway.routing.state import ReplicaState
from gateway.routing.strategies import LeastOutstanding
from gateway.routing.table import Replica


@dataclass(frozen=True, slots=True)
class PrefixSettings:
    """`routing.prefix_aware` in the config; defaults and their sources in docs/routing.md."""

    block_bytes: int = 2048
    min_match_tokens: int = 256
    min_match_ratio: float = 0.3
    load_window: float = 8.0
    balance_abs: float = 64.0
    balance_rel: float = 1.5
    kv_capacity_tokens: int = 450_000


def salt_of(call: Call) -> str:
    """The tenant a call's KV blocks belong to (empty: shared by every tenant). Set by the
    executor's isolation step (`kv_isolation` of the alias), read here so routing keys on
    (salt, prefix) exactly as the engine caches."""
    return call.kv_salt or ""


def prediction_for(call: Call, block_bytes: int) -> PrefixPrediction | None:
    """The call's prompt keys, worked out once per call (a retry or a fallback tier reuses
    them); None for calls that reuse no KV cache."""
    known = call.prefix
    if isinstance(known, PrefixPrediction) and known.block_bytes == block_bytes:
        return known
    found = prompt_parts(call)
    if found is None:
        return None
    parts, anchor = found
    keys = block_hashes(parts, block_bytes, salt_of(call), anchor)
    size = sum(len(p) for p in parts)
    call.prefix = PrefixPrediction(
        keys.hashes, keys.ends, block_bytes, size, keys.root, keys.anchor
    )
    return call.prefix


class PrefixAware:
    name: ClassVar[str] = "prefix_aware"

    def __init__(self, settings: PrefixSettings | None = None) -> None:
        self.settings = settings or PrefixSettings()
        self._names: dict[Replica, bytes] = {}  # for rendezvous hashing

    def order(
        self,
        replicas: Sequence[Replica],
        states: Sequence[ReplicaState],
        rng: random.Random,
        call: Call | None = None,
    ) -> Iterator[int]:
        count = len(replicas)
        prediction = (
            prediction_for(call, self.settings.block_bytes)
            if call is not None and count > 1
            else None
        )
        if prediction is None:
            yield from _LEAST.order(replicas, states, rng)
            return
        if not prediction.hashes:  # shorter than a block: no index work, only a fleet-wide
            yield from self._cold(replicas, states, prediction)  # consistent choice
            return
        first = self._choose(replicas, states, prediction)
        self._dispatching(replicas[first], states[first], prediction)
        yield first
        rest = sorted((i for i in range(count) if i != first), key=lambda i: states[i].load)
        for i in rest:
            self._dispatching(replicas[i], states[i], prediction)
            yield i

    def _cold(
        self, replicas: Sequence[Replica], states: Sequence[ReplicaState], p: PrefixPrediction
    ) -> Iterator[int]:
        live = [i for i in range(len(replicas)) if states[i].available()] or list(
            range(len(replicas))
        )
        first = self._ranked(live, replicas, states, p)
        yield first
        yield from sorted((i for i in range(len(replicas)) if i != first),
                          key=lambda i: states[i].load)  # fmt: skip

    def _choose(
        self, replicas: Sequence[Replica], states: Sequence[ReplicaState], p: PrefixPrediction
    ) -> int:
        s = self.settings
        count = len(replicas)
        live = [i for i in range(count) if states[i].available()] or list(range(count))
        loads = [state.load for state in states]
        low = min(loads[i] for i in live)
        high = max(loads[i] for i in live)
        if high - low > s.balance_abs and high > s.balance_rel * low:
            return self._ranked([i for i in live if loads[i] == low], replicas, states, p)
        near = [i for i in live if loads[i] <= low + s.load_window]
        best, most = near[0], 0
        for i in near:
            index = states[i].prefix_index
            held = index.match(p.hashes) if index is not None else 0
            if held > most or (held == most and held and loads[i] < loads[best]):
                best, most = i, held
        if most:
            size = p.ends[most - 1]  # bytes of the prompt the replica holds
            if size / CHARS_PER_TOKEN >= s.min_match_tokens and (
                size >= s.min_match_ratio * p.prompt_bytes
            ):
                return best
        # Nothing worth going to: placed as a cold prompt is, among the replicas near the
        # least loaded.
        return self._ranked(near, replicas, states, p)

    def _ranked(
        self,
        candidates: list[int],
        replicas: Sequence[Replica],
        states: Sequence[ReplicaState],
        p: PrefixPrediction,
    ) -> int:
        """Of the candidates rendezvous hashing ranks first for the prompt's start and for
        its conversation, the less loaded (ties: the first)."""
        if len(candidates) == 1:
            return candidates[0]
        names = self._names
        for i in candidates:
            if replicas[i] not in names:
                names[replicas[i]] = f"{replicas[i].backend}\x00{replicas[i].model}".encode()
        by_start = max(candidates, key=lambda i: rendezvous(p.root, names[replicas[i]]))
        by_talk = max(candidates, key=lambda i: rendezvous(p.anchor, names[replicas[i]]))
        return by_talk if states[by_talk].load < states[by_start].load else by_start

    def _dispatching(self, replica: Replica, state: ReplicaState, p: PrefixPrediction) -> None:
        """Remembers what was predicted for this replica, then indexes the prompt there."""
        index = self._index(replica, state)
        stats = state.prefix_stats
        if stats is None:
            stats = state.prefix_stats = PrefixStats()
        p.tried[replica.key] = PrefixTried(index, stats, index.match(p.hashes), replica.backend)
        index.insert(p.hashes, p.ends)

    def _index(self, replica: Replica, state: ReplicaState) -> PrefixIndex:
        index = state.prefix_index
        capacity = state.kv_capacity_tokens or self.settings.kv_capacity_tokens
        if state.engine is not None and state.engine.kv_capacity_tokens:
            capacity = state.engine.kv_capacity_tokens
        stats = state.prefix_stats
        size = int(capacity * (stats.bytes_per_token if stats else CHARS_PER_TOKEN))
        if index is None:
            index = state.prefix_index = PrefixIndex(size)
            if state.feed is not None:
                state.feed.attach(state, index)
        elif abs(index.configured - size) > index.configured // 20:
            # The engine reported its size, a reload changed it, or the learnt bytes per token
            # moved: resize, keeping what the closed loop took off.
            kept = index.capacity / index.configured
            index.configured = max(1, size)
            index.capacity = max(1, int(index.configured * kept))
        return index


_LEAST = LeastOutstanding()
