"""One way to open redis-py for every store that uses Redis: a single server or a Redis Cluster.

On a cluster, a store's multi-key scripts still run because each store puts the keys one
script touches under one hash tag (one slot). redis-py's cluster client finds each slot's
node and follows MOVED and ASK redirects; what the stores call is the same on both.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

RedisLike = aioredis.Redis | RedisCluster


def redis_client(url: str, *, cluster: bool, timeout_s: float, **options: Any) -> RedisLike:
    """`options` are connection-pool settings (`max_connections`, ...); `blocking_pool` asks a
    single server's pool to make a burst wait for a connection rather than fail (the cluster
    client keeps one pool per node and has no blocking variant)."""
    common = {"socket_timeout": timeout_s, "socket_connect_timeout": timeout_s, **options}
    if cluster:
        common.pop("blocking_pool", None)
        common.pop("retry_on_timeout", None)
        return RedisCluster.from_url(url, **common)
    if common.pop("blocking_pool", False):
        pool = aioredis.BlockingConnectionPool.from_url(url, timeout=10.0, **common)
        return aioredis.Redis(connection_pool=pool)
    return aioredis.Redis.from_url(url, **common)


async def close(client: RedisLike) -> None:
    await client.aclose()
    if isinstance(client, aioredis.Redis):
        await client.connection_pool.disconnect()
