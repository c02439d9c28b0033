"""The counter store under test: every behavioural test runs on the embedded store, on a real
Redis (a fresh key prefix per test, deleted afterwards) and on a 3-node Redis Cluster of this
test session's own (reached through a node that does not own the counters' slot, so every
test also follows a redirect)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from gateway.stores.counters import CounterStore
from gateway.stores.memory import MemoryCounters
from gateway.stores.redis_counters import RedisCounters
from tests.support.services import REDIS_URL, PrivateRedis, redis_prefix, seed_elsewhere

StoreFactory = Callable[[Callable[[], float]], CounterStore]


class Clock:
    """An injectable wall clock (epoch seconds) that tests move by hand."""

    def __init__(self, when: str, zone: str = "UTC") -> None:
        self.now = datetime.fromisoformat(when).replace(tzinfo=ZoneInfo(zone)).timestamp()

    def __call__(self) -> float:
        return self.now

    def set(self, when: str, zone: str = "UTC") -> None:
        self.now = datetime.fromisoformat(when).replace(tzinfo=ZoneInfo(zone)).timestamp()


@pytest.fixture(params=["memory", "redis", "redis-cluster"])
async def make_store(request: pytest.FixtureRequest) -> AsyncIterator[StoreFactory]:
    if request.param == "memory":
        yield MemoryCounters
        return
    made: list[RedisCounters] = []
    on_cluster = request.param == "redis-cluster"
    nodes: list[PrivateRedis] = request.getfixturevalue("cluster") if on_cluster else []
    with redis_prefix(nodes[0].url if nodes else REDIS_URL) as prefix:
        url = seed_elsewhere(nodes, "{" + prefix + "}") if nodes else REDIS_URL

        def factory(clock: Callable[[], float]) -> CounterStore:
            store = RedisCounters(url, prefix, timeout_s=2.0, cluster=on_cluster)
            made.append(store)
            return store

        yield factory
        for store in made:
            await store.aclose()
