"""The cache's entry stores, in-process, on a real Redis (a fresh key prefix per test) and on a
Redis Cluster:
bounds per namespace, expiry, the vector feed, and a store outage as an error the stage can
treat as a miss."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest
import redis

from gateway.cache.redis_store import RedisEntries
from gateway.cache.stores import EntryStore, MemoryEntries, StoreFailure, VectorItem
from tests.support.services import REDIS_URL, PrivateRedis, cache_prefix

Factory = Callable[[Callable[[], float]], EntryStore]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["memory", "redis", "redis-cluster"])
async def make(request: pytest.FixtureRequest) -> AsyncIterator[Factory]:
    if request.param == "memory":
        yield lambda clock: MemoryEntries(clock=clock)
        return
    made: list[RedisEntries] = []
    on_cluster = request.param == "redis-cluster"
    url = request.getfixturevalue("cluster")[0].url if on_cluster else REDIS_URL
    with cache_prefix(url) as prefix:

        def factory(clock: Callable[[], float]) -> EntryStore:
            store = RedisEntries(url, prefix, 2.0, l1_entries=0, clock=clock, cluster=on_cluster)
            made.append(store)
            return store

        yield factory
        for store in made:
            await store.aclose()


async def test_an_entry_is_kept_per_namespace(make: Factory) -> None:
    store = make(Clock())
    await store.put("chat/team:a", "d1", b"answer", 60, 10)
    assert await store.get("chat/team:a", "d1") == b"answer"
    assert await store.get("chat/team:b", "d1") is None  # another tenant: nothing


async def test_each_namespace_keeps_its_most_recently_used(make: Factory) -> None:
    store = make(Clock())
    for i in range(3):
        await store.put("ns", f"d{i}", b"x", 60, 3)
    assert await store.get("ns", "d0") == b"x"  # used: now the most recent
    await store.put("ns", "d3", b"x", 60, 3)
    assert await store.get("ns", "d1") is None  # the least recently used went
    assert [await store.get("ns", d) for d in ("d0", "d2", "d3")] == [b"x"] * 3
    await store.put("other", "d9", b"x", 60, 3)  # another namespace's bound is its own
    assert await store.get("ns", "d0") == b"x"


async def test_entries_expire() -> None:
    clock = Clock()
    store = MemoryEntries(clock=clock)
    await store.put("ns", "d", b"x", 30, 10)
    clock.now += 29.9
    assert await store.get("ns", "d") == b"x"
    clock.now += 0.2
    assert await store.get("ns", "d") is None
    assert len(store) == 0 and store.size_bytes == 0


async def test_redis_entries_expire_on_the_server() -> None:
    with cache_prefix() as prefix:
        store = RedisEntries(REDIS_URL, prefix, 2.0, l1_entries=0)
        await store.put("ns", "d", b"x", 0.05, 10)
        client = redis.Redis.from_url(REDIS_URL)
        ttl = client.pttl(f"{prefix}{{ns}}:e:d")
        client.close()
        assert 0 < ttl <= 50
        await store.aclose()


async def test_the_process_bound_in_bytes_holds_across_namespaces() -> None:
    store = MemoryEntries(max_bytes=1000)
    for i in range(30):
        await store.put(f"ns{i}", "d", b"x" * 100, 60, 100)
    assert store.size_bytes <= 1000 and len(store) == 10
    assert await store.get("ns29", "d") is not None and await store.get("ns0", "d") is None


async def test_the_l1_answers_without_redis_after_a_read() -> None:
    with cache_prefix() as prefix:
        store = RedisEntries(REDIS_URL, prefix, 2.0, l1_entries=10)
        writer = RedisEntries(REDIS_URL, prefix, 2.0, l1_entries=0)
        await writer.put("ns", "d", b"x", 60, 10)
        assert await store.get("ns", "d") == b"x"
        client = redis.Redis.from_url(REDIS_URL)
        client.delete(f"{prefix}{{ns}}:e:d")
        client.close()
        assert await store.get("ns", "d") == b"x"  # from its L1
        assert await writer.get("ns", "d") is None
        await store.aclose()
        await writer.aclose()


@pytest.mark.parametrize("on_cluster", [False, True], ids=["redis", "redis-cluster"])
async def test_semantic_entries_reach_another_gateway_through_the_feed(
    request: pytest.FixtureRequest, on_cluster: bool
) -> None:
    url = request.getfixturevalue("cluster")[0].url if on_cluster else REDIS_URL
    with cache_prefix(url) as prefix:
        one = RedisEntries(url, prefix, 2.0, l1_entries=0, cluster=on_cluster)
        two = RedisEntries(url, prefix, 2.0, l1_entries=0, cluster=on_cluster)
        item = VectorItem("ns", "bucket", "d1", b"\x00\x00\x80?")
        await one.publish(item, 60)
        seen, cursor = await two.vectors("")
        assert seen == [item]
        await one.publish(VectorItem("ns", "bucket", "d2", b"\x00\x00\x80?"), 60)
        later, _ = await two.vectors(cursor)
        assert [i.digest for i in later] == ["d2"]
        await one.publish(VectorItem("ns", "bucket", "gone", b"\x00\x00\x80?"), -1)  # expired
        assert [i.digest for i in (await two.vectors(""))[0]] == ["d1", "d2"]
        await one.aclose()
        await two.aclose()


async def test_a_redis_outage_is_a_store_failure_not_a_hang() -> None:
    with PrivateRedis() as private:
        store = RedisEntries(private.url, "p:", 0.2, l1_entries=0)
        await store.put("ns", "d", b"x", 60, 10)
        private.kill()
        with pytest.raises(StoreFailure):
            await store.get("ns", "d")
        with pytest.raises(StoreFailure):
            await store.put("ns", "d", b"x", 60, 10)
        await store.aclose()
