"""Shared counters in Redis: each reservation and each settlement is one Lua script, so a
fleet of gateways checks and charges every budget on a call's path atomically in one round trip.

Every key carries the same hash tag (`{prefix}`), so a call's keys share one slot and the
scripts also run on Redis Cluster (`limits.redis_cluster`): all of one prefix's counters live
on the node that owns its slot, which is what makes checking several budgets atomic.
"""

from __future__ import annotations

from collections.abc import Sequence
from hashlib import sha1
from typing import Any

from redis.exceptions import RedisError

from gateway.stores import redis_scripts
from gateway.stores.counters import (
    Charge,
    HoldTag,
    Refused,
    Settlement,
    StoreRejected,
    StoreUnavailable,
    Tally,
)
from gateway.stores.redis_client import close, redis_client
from gateway.stores.resp import RedisReplyError, RespPipe

# A hold's own record outlives its expiry long enough for a sweeper to find it.
_HOLD_KEEP_S = 86_400


class RedisCounters:
    name = "redis"

    def __init__(
        self,
        url: str,
        prefix: str,
        timeout_s: float,
        max_connections: int = 64,
        *,
        cluster: bool = False,
    ) -> None:
        # A bounded pool that makes a burst wait for a connection (one script per call is
        # short) instead of failing it; socket timeouts, not pool waits, detect an outage.
        self._redis = redis_client(
            url, cluster=cluster, timeout_s=timeout_s, max_connections=max_connections,
            blocking_pool=True, retry_on_timeout=False, health_check_interval=0,
        )  # fmt: skip
        self._pipe = RespPipe(url, timeout_s)
        self._prefix = "{" + prefix + "}:"
        self._scripts = {
            name: (body, sha1(body.encode()).hexdigest())
            for name, body in (
                ("reserve", redis_scripts.RESERVE),
                ("release", redis_scripts.RELEASE),
                ("sweep", redis_scripts.SWEEP),
                ("settle", redis_scripts.SETTLE),
            )
        }
        self._holds = self._prefix + "holds"

    def _k(self, key: str) -> str:
        return self._prefix + key

    async def reserve(
        self, charges: Sequence[Charge], hold: HoldTag | None = None
    ) -> Refused | list[int]:
        args: list[Any] = [len(charges)]
        for c in charges:
            args += [c.amount, -1 if c.limit is None else c.limit, c.ttl]
        keys = [self._k(c.key) for c in charges]
        if hold is not None:
            keys += [self._holds, self._hold_key(hold)]
            args += [f"{hold.expires_at:.3f}", _HOLD_KEEP_S]
        else:
            keys += [self._holds, self._k("hold:none")]
            args += [0, 0]
        result = await self._script("reserve", keys, args)
        if int(result[0]) != 0:
            return Refused(int(result[0]) - 1, int(result[1]))
        return [int(v) for v in result[1:]]

    async def release(self, settlements: Sequence[Settlement]) -> None:
        # A reservation without a hold (a batch's: no sweeper ever releases it) just takes
        # the differences; a held one is released with its hold, once.
        untagged = [
            Charge(key, actual - reserved, None, ttl)
            for s in settlements if s.hold is None
            for key, reserved, actual, ttl in s.lines if actual != reserved
        ]  # fmt: skip
        if untagged:
            await self.settle(untagged, ())
        settlements = [s for s in settlements if s.hold is not None]
        keys: list[str] = [self._holds]
        args: list[Any] = [len(settlements)]
        for settlement in settlements:
            tag = settlement.hold
            assert tag is not None
            keys.append(self._hold_key(tag))
            args.append(len(settlement.lines))
            for key, reserved, actual, ttl in settlement.lines:
                keys.append(self._k(key))
                args += [reserved, actual, ttl]
        if settlements:
            await self._script("release", keys, args)

    async def sweep_holds(self, now: float) -> int:
        return int(await self._script("sweep", [self._holds], [f"{now:.3f}", 500]))

    def _hold_key(self, hold: HoldTag) -> str:
        return self._prefix + "hold:" + hold.id

    async def settle(self, deltas: Sequence[Charge], tallies: Sequence[Tally]) -> None:
        keys = [self._k(d.key) for d in deltas] + [self._k(t.table) for t in tallies]
        args: list[Any] = [len(deltas)]
        for d in deltas:
            args += [d.amount, d.ttl]
        for t in tallies:
            args += [t.field, t.amount, t.ttl]
        if keys:
            await self._script("settle", keys, args)

    async def seed(self, key: str, value: int, ttl: int) -> bool:
        args: list[Any] = ["SET", self._k(key), value, "NX"]
        if ttl > 0:
            args += ["EX", ttl]
        try:
            return await self._pipe.call(*args) is not None
        except RedisReplyError as exc:
            raise _classified(exc) from exc

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
        await close(self._redis)

    async def _script(self, name: str, keys: list[str], args: list[Any]) -> Any:
        """EVALSHA, and EVAL (which also caches the script) when Redis does not know it yet."""
        body, sha = self._scripts[name]
        try:
            return await self._pipe.call("EVALSHA", sha, len(keys), *keys, *args)
        except RedisReplyError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise _classified(exc) from exc
        try:
            return await self._pipe.call("EVAL", body, len(keys), *keys, *args)
        except RedisReplyError as exc:
            raise _classified(exc) from exc


def _classified(exc: RedisReplyError) -> StoreUnavailable | StoreRejected:
    """A reply error is the store's verdict on what we sent (a script error, a value out of
    range), unless Redis says it cannot serve at all right now."""
    text = str(exc)
    unavailable = ("LOADING", "BUSY", "MASTERDOWN", "CLUSTERDOWN", "TRYAGAIN", "READONLY", "ASK")
    if text.startswith(unavailable):
        return StoreUnavailable(f"redis: {text}")
    return StoreRejected(f"redis: {text}")


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
