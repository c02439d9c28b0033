"""The counter store under test: every behavioural test runs on the embedded store and on a
real Redis (a fresh key prefix per test, deleted afterwards)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from gateway.stores.counters import CounterStore
from gateway.stores.memory import MemoryCounters
from gateway.stores.redis_counters import RedisCounters
from tests.support.services import REDIS_URL, redis_prefix

StoreFactory = Callable[[Callable[[], float]], CounterStore]


class Clock:
    """An injectable wall clock (epoch seconds) that tests move by hand."""

    def __init__(self, when: str, zone: str = "UTC") -> None:
        self.now = datetime.fromisoformat(when).replace(tzinfo=ZoneInfo(zone)).timestamp()

    def __call__(self) -> float:
        return self.now

    def set(self, when: str, zone: str = "UTC") -> None:
        self.now = datetime.fromisoformat(when).replace(tzinfo=ZoneInfo(zone)).timestamp()


@pytest.fixture(params=["memory", "redis"])
async def make_store(request: pytest.FixtureRequest) -> AsyncIterator[StoreFactory]:
    if request.param == "memory":
        yield MemoryCounters
        return
    made: list[RedisCounters] = []
    with redis_prefix() as prefix:

        def factory(clock: Callable[[], float]) -> CounterStore:
            store = RedisCounters(REDIS_URL, prefix, timeout_s=2.0)
            made.append(store)
            return store

        yield factory
        for store in made:
            await store.aclose()
