"""Cache entries in Redis, shared by every gateway of a fleet, with an in-process L1 in front.

An entry is one key with its TTL; each namespace has a sorted set of its digests by last use
(a per-namespace sequence, so order holds within a millisecond and across clocks), so its
bound holds across the fleet (one Lua script per write, one per read; a namespace's
keys share a hash tag, so the scripts run on Redis Cluster too). Semantic entries are also
appended to one stream that every gateway's vector index tails. Any error or a reply slower
than the timeout is a StoreFailure: the stage treats it as a miss.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

from redis.exceptions import RedisError

from gateway.cache.stores import StoreFailure, VectorItem, exact_size
from gateway.stores.redis_client import close, redis_client

_PUT = """
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
local use = redis.call('INCR', KEYS[3])
redis.call('ZADD', KEYS[2], use, ARGV[4])
local over = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[3])
if over > 0 then
  local old = redis.call('ZPOPMIN', KEYS[2], over)
  for i = 1, #old, 2 do redis.call('DEL', ARGV[5] .. old[i]) end
end
redis.call('PEXPIRE', KEYS[2], ARGV[2])
redis.call('PEXPIRE', KEYS[3], ARGV[2])
return 1
"""
_GET = """
local value = redis.call('GET', KEYS[1])
if value and redis.call('ZSCORE', KEYS[2], ARGV[1]) then
  redis.call('ZADD', KEYS[2], redis.call('INCR', KEYS[3]), ARGV[1])
end
return value
"""
# Stream entries kept for indexes catching up (approximate trimming, as Redis recommends).
_STREAM_MAX = 1_000_000
_L1_SECONDS = 30.0
# Stream entries read at once: indexing one can take a fraction of a millisecond (a large
# bucket's graph: bench/cache_work.py), so a gateway catching up yields to calls between batches.
_BATCH = 256


class RedisEntries:
    shared = True

    def __init__(
        self,
        url: str,
        prefix: str,
        timeout_s: float,
        l1_entries: int,
        clock: Callable[[], float] = time.monotonic,
        *,
        cluster: bool = False,
    ) -> None:
        self._redis = redis_client(
            url, cluster=cluster, timeout_s=timeout_s, retry_on_timeout=False
        )
        self._prefix = prefix
        self._timeout = timeout_s
        self._put = self._redis.register_script(_PUT)
        self._get = self._redis.register_script(_GET)
        self._stream = f"{prefix}vectors"
        self._l1: OrderedDict[tuple[str, str], tuple[float, bytes]] = OrderedDict()
        self._l1_size = l1_entries
        self._clock = clock

    def _keys(self, namespace: str, digest: str) -> tuple[list[str], str]:
        """The entry, its namespace's use order and sequence; the entries' common stem."""
        space = f"{self._prefix}{{{namespace}}}"
        return [f"{space}:e:{digest}", f"{space}:lru", f"{space}:seq"], f"{space}:e:"

    async def get(self, namespace: str, digest: str) -> bytes | None:
        kept = self._l1.get((namespace, digest))
        if kept is not None:
            if kept[0] > self._clock():
                self._l1.move_to_end((namespace, digest))
                return kept[1]
            del self._l1[(namespace, digest)]
        keys, _ = self._keys(namespace, digest)
        value = await self._call(self._get(keys=keys, args=[digest]))
        if value is not None:
            self._remember(namespace, digest, bytes(value), _L1_SECONDS)
        return bytes(value) if value is not None else None

    async def put(
        self, namespace: str, digest: str, value: bytes, ttl_s: float, max_entries: int
    ) -> None:
        keys, stem = self._keys(namespace, digest)
        ttl_ms = max(1, int(ttl_s * 1000))
        args: list[Any] = [value, ttl_ms, max_entries, digest, stem]
        await self._call(self._put(keys=keys, args=args))
        self._remember(namespace, digest, value, min(ttl_s, _L1_SECONDS))

    def _remember(self, namespace: str, digest: str, value: bytes, ttl_s: float) -> None:
        if self._l1_size <= 0:
            return
        self._l1[(namespace, digest)] = (self._clock() + ttl_s, exact_size(value))
        self._l1.move_to_end((namespace, digest))
        while len(self._l1) > self._l1_size:
            self._l1.popitem(last=False)

    async def publish(self, item: VectorItem, ttl_s: float) -> None:
        fields: dict[Any, Any] = {
            "n": item.namespace, "b": item.bucket, "d": item.digest, "v": item.vector,
            "x": int((time.time() + ttl_s) * 1000),
        }  # fmt: skip
        await self._call(
            self._redis.xadd(self._stream, fields, maxlen=_STREAM_MAX, approximate=True)
        )

    async def vectors(self, cursor: str) -> tuple[list[VectorItem], str]:
        start = f"({cursor}" if cursor else "-"
        rows = await self._call(self._redis.xrange(self._stream, min=start, count=_BATCH))
        now_ms = time.time() * 1000
        items = []
        for stream_id, fields in rows:
            cursor = stream_id.decode() if isinstance(stream_id, bytes) else str(stream_id)
            if int(fields.get(b"x", b"0")) <= now_ms:
                continue  # its entry has expired: nothing to index
            items.append(VectorItem(fields[b"n"].decode(), fields[b"b"].decode(),
                                    fields[b"d"].decode(), bytes(fields[b"v"])))  # fmt: skip
        return items, cursor

    async def _call(self, pending: Awaitable[Any]) -> Any:
        try:
            async with asyncio.timeout(self._timeout):
                return await pending
        except (RedisError, TimeoutError, OSError) as err:
            raise StoreFailure(f"redis cache store: {type(err).__name__}: {err}") from err

    async def aclose(self) -> None:
        await close(self._redis)
