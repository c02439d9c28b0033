"""Prefix-aware routing as one across a fleet: every gateway appends what it routed (a
prompt's block keys, on a replica) and the indexes it cleared to one Redis stream, and
applies what the others appended to its own per-replica indexes, within `sync_ms`.

Eventually consistent on purpose: the routing decision stays a local, synchronous lookup
(no Redis round trip on a call's path); a conversation's next turn, usually seconds after
the last, finds its prefix whichever gateway routed the last one. A gateway that starts
replays the stream's retained history (its replicas still hold those prefixes). Redis down:
each gateway routes on what it knows (and on rendezvous hashing for cold prompts), and the
outage is counted and logged, never a failed call.
"""

from __future__ import annotations

import asyncio
import logging
import os
import struct
from array import array
from collections import deque
from collections.abc import Sequence
from typing import Any

from redis.exceptions import RedisError

from gateway.routing.prefix import CHARS_PER_TOKEN, PrefixIndex
from gateway.routing.state import ReplicaState, ReplicaStates
from gateway.stores.redis_client import close, redis_client

log = logging.getLogger("gateway.routing")
_PENDING_MAX = 20_000  # events waiting to be sent; past it the oldest go (counted)
_READ = 100  # stream entries (each one gateway's events of one sync) read at once


_HEAD = struct.Struct("<HcI")  # replica name's length, kind, block count


class _Sharer:
    __slots__ = ("_feed", "_replica")

    def __init__(self, feed: PrefixFeed, replica: bytes) -> None:
        self._feed, self._replica = feed, replica

    def inserted(self, hashes: Sequence[int], ends: Sequence[int]) -> None:
        self._feed.queue(self._replica, b"i", hashes, ends)

    def cleared(self) -> None:
        self._feed.queue(self._replica, b"c", (), ())


def pack(events: Sequence[tuple[bytes, bytes, Sequence[int], Sequence[int]]]) -> bytes:
    """Events as one blob: per event its replica, kind and block keys and ends (uint64)."""
    out = bytearray()
    for replica, kind, hashes, ends in events:
        out += _HEAD.pack(len(replica), kind, len(hashes))
        out += replica
        out += array("Q", hashes).tobytes()
        out += array("Q", ends).tobytes()
    return bytes(out)


def unpack(blob: bytes) -> list[tuple[bytes, bytes, array[int], array[int]]]:
    view, at, out = memoryview(blob), 0, []
    while at < len(view):
        size, kind, count = _HEAD.unpack_from(view, at)
        at += _HEAD.size
        replica = bytes(view[at : at + size])
        at += size
        hashes, ends = array("Q"), array("Q")
        hashes.frombytes(view[at : at + 8 * count])
        ends.frombytes(view[at + 8 * count : at + 16 * count])
        at += 16 * count
        out.append((replica, kind, hashes, ends))
    return out


class PrefixFeed:
    def __init__(
        self,
        url: str,
        prefix: str,
        states: ReplicaStates,
        sync_s: float = 0.05,
        timeout_s: float = 0.5,
        retain: int = 200_000,
        capacity_tokens: int = 450_000,
        cluster: bool = False,
    ) -> None:
        self.id = os.urandom(8).hex().encode()
        self._redis = redis_client(url, cluster=cluster, timeout_s=timeout_s)
        self._stream = f"{prefix}prefix-routes"
        self._states = states
        self._sync = sync_s
        self._retain = retain
        self._capacity = capacity_tokens
        self._pending: deque[tuple[bytes, bytes, Sequence[int], Sequence[int]]] = deque()
        self._cursor = "0"
        self._task: asyncio.Task[None] | None = None
        self.sent = self.applied = self.dropped = self.failures = 0
        states.feed = self

    def attach(self, state: ReplicaState, index: PrefixIndex) -> None:
        index.share = _Sharer(self, f"{state.backend}\x00{state.model}".encode())

    def queue(
        self, replica: bytes, kind: bytes, hashes: Sequence[int], ends: Sequence[int]
    ) -> None:
        if len(self._pending) >= _PENDING_MAX:
            self._pending.popleft()
            self.dropped += 1
        self._pending.append((replica, kind, hashes, ends))

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            try:
                await self.sync()
            except (RedisError, OSError, TimeoutError) as err:
                self.failures += 1
                if self.failures == 1 or self.failures % 100 == 0:
                    log.warning("prefix index sharing: redis unavailable (%s); routing on "
                                "this gateway's own index", err)  # fmt: skip
            await asyncio.sleep(self._sync)

    async def sync(self) -> None:
        """Sends what this gateway routed since the last sync (one stream entry), then
        applies what the others sent."""
        if self._pending:
            batch = list(self._pending)
            entry: dict[Any, Any] = {b"g": self.id, b"b": pack(batch)}
            await self._redis.xadd(self._stream, entry, maxlen=self._retain, approximate=True)
            for _ in batch:
                self._pending.popleft()
            self.sent += len(batch)
        while True:
            rows = await self._redis.xrange(self._stream, min=f"({self._cursor}", count=_READ)
            rows = rows or []
            for stream_id, fields in rows:
                self._cursor = (
                    stream_id.decode() if isinstance(stream_id, bytes) else str(stream_id)
                )
                blob = fields.get(b"b") if fields else None
                if isinstance(blob, bytes) and fields and fields.get(b"g") != self.id:
                    for event in unpack(blob):
                        self._apply(*event)
            if len(rows) < _READ:
                return
            await asyncio.sleep(0)  # catching up must not starve the calls being served

    def _apply(self, replica: bytes, kind: bytes, hashes: array[int], ends: array[int]) -> None:
        backend, _, model = replica.decode().partition("\x00")
        state = self._states.find((backend, model))
        if state is None:
            return  # a replica this gateway's config does not have
        index = state.prefix_index
        if index is None:
            tokens = state.kv_capacity_tokens or self._capacity
            index = state.prefix_index = PrefixIndex(int(tokens * CHARS_PER_TOKEN))
            self.attach(state, index)
        if kind == b"c":
            index.clear(shared=False)
        elif hashes and len(hashes) == len(ends):
            index.insert(hashes, ends, shared=False)
        self.applied += 1

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            try:
                await self.sync()  # what this gateway routed last, for the others
            except (RedisError, OSError, TimeoutError):
                pass
        await close(self._redis)
