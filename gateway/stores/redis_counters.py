"""Shared counters in Redis: each reservation and each settlement is one Lua script, so a
fleet of gateways checks and charges every budget on a call's path atomically in one round trip.

Every key carries the same hash tag (`{prefix}`), so a call's keys share one slot and the
scripts also run on Redis Cluster.
"""

from __future__ import annotations

from collections.abc import Sequence
from hashlib import sha1
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from gateway.stores.counters import Charge, Refused, StoreUnavailable, Tally
from gateway.stores.resp import RedisReplyError, RespPipe

# KEYS: counters. ARGV: per key (amount, limit or -1, ttl). Check all, then charge all.
_RESERVE = """
local n = #KEYS
local current = {}
for i = 1, n do
  local cur = tonumber(redis.call('GET', KEYS[i]) or '0')
  current[i] = cur
  local limit = tonumber(ARGV[3 * i - 1])
  if limit >= 0 and cur + tonumber(ARGV[3 * i - 2]) > limit then
    return {i, cur}
  end
end
local out = {0}
for i = 1, n do
  out[i + 1] = redis.call('INCRBY', KEYS[i], ARGV[3 * i - 2])
  local ttl = tonumber(ARGV[3 * i])
  if ttl > 0 then redis.call('EXPIRE', KEYS[i], ttl) end
end
return out
"""

# KEYS: counters then tables. ARGV[1]: how many counters; then per counter (delta, ttl);
# then per table (field, amount, ttl).
_SETTLE = """
local n = tonumber(ARGV[1])
local a = 2
for i = 1, n do
  redis.call('INCRBY', KEYS[i], ARGV[a])
  local ttl = tonumber(ARGV[a + 1])
  if ttl > 0 then redis.call('EXPIRE', KEYS[i], ttl) end
  a = a + 2
end
for i = n + 1, #KEYS do
  redis.call('HINCRBY', KEYS[i], ARGV[a], ARGV[a + 1])
  local ttl = tonumber(ARGV[a + 2])
  if ttl > 0 then redis.call('EXPIRE', KEYS[i], ttl) end
  a = a + 3
end
return 1
"""


class RedisCounters:
    name = "redis"

    def __init__(self, url: str, prefix: str, timeout_s: float, max_connections: int = 64) -> None:
        # A bounded pool that makes a burst wait for a connection (one script per call is
        # short) instead of failing it; socket timeouts, not pool waits, detect an outage.
        pool = aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            timeout=10.0,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry_on_timeout=False,
            health_check_interval=0,
        )
        self._redis = aioredis.Redis(connection_pool=pool)
        self._pipe = RespPipe(url, timeout_s)
        self._prefix = "{" + prefix + "}:"
        self._scripts = {name: (body, sha1(body.encode()).hexdigest()) for name, body in (
            ("reserve", _RESERVE), ("settle", _SETTLE))}  # fmt: skip

    def _k(self, key: str) -> str:
        return self._prefix + key

    async def reserve(self, charges: Sequence[Charge]) -> Refused | list[int]:
        args: list[Any] = []
        for c in charges:
            args += [c.amount, -1 if c.limit is None else c.limit, c.ttl]
        result = await self._script("reserve", [self._k(c.key) for c in charges], args)
        if int(result[0]) != 0:
            return Refused(int(result[0]) - 1, int(result[1]))
        return [int(v) for v in result[1:]]

    async def settle(self, deltas: Sequence[Charge], tallies: Sequence[Tally]) -> None:
        keys = [self._k(d.key) for d in deltas] + [self._k(t.table) for t in tallies]
        args: list[Any] = [len(deltas)]
        for d in deltas:
            args += [d.amount, d.ttl]
        for t in tallies:
            args += [t.field, t.amount, t.ttl]
        if keys:
            await self._script("settle", keys, args)

    async def values(self, keys: Sequence[str]) -> list[int]:
        if not keys:
            return []
        try:
            raw = await self._redis.mget([self._k(k) for k in keys])
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"redis: {exc}") from exc
        return [int(v) if v is not None else 0 for v in raw]

    async def table(self, table: str) -> dict[str, int]:
        try:
            raw = await self._redis.hgetall(self._k(table))
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"redis: {exc}") from exc
        return {_text(k): int(v) for k, v in raw.items()}

    async def ping(self) -> None:
        try:
            await self._redis.ping()
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"redis: {exc}") from exc

    async def aclose(self) -> None:
        await self._pipe.aclose()
        await self._redis.aclose()
        await self._redis.connection_pool.disconnect()

    async def _script(self, name: str, keys: list[str], args: list[Any]) -> Any:
        """EVALSHA, and EVAL (which also caches the script) when Redis does not know it yet."""
        body, sha = self._scripts[name]
        try:
            return await self._pipe.call("EVALSHA", sha, len(keys), *keys, *args)
        except RedisReplyError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise StoreUnavailable(f"redis: {exc}") from exc
        try:
            return await self._pipe.call("EVAL", body, len(keys), *keys, *args)
        except RedisReplyError as exc:
            raise StoreUnavailable(f"redis: {exc}") from exc


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
