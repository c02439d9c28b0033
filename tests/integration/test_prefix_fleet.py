"""A fleet's gateways share their prefix indexes through Redis (routing/prefix_feed.py): what
one routed, the others know within a sync; a replica's cleared index is cleared for all;
Redis going away costs the sharing, never a call."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.accounting.tokens import TokenCounter
from gateway.call import Call, CallRecord, Principal
from gateway.pipeline import Pipeline
from gateway.recorder import Recorder
from gateway.routing.prefix import PrefixPrediction
from gateway.routing.prefix_feed import PrefixFeed
from gateway.routing.state import ReplicaStates
from gateway.runtime import Runtime
from tests.support.runtime import make_deps, runtime_from
from tests.support.services import REDIS_URL, PrivateRedis, cache_prefix

SIMS = "\n".join(
    f"  r{i}: {{type: sim, time_scale: 0, models: [{{name: m, kv_blocks: 40000}}]}}"
    for i in range(4)
)
CONFIG = f"""
version: 1
auth: {{mode: open}}
backends:
{SIMS}
models:
  chat:
    tiers: {{fp16: [{", ".join(f"{{backend: r{i}, model: m}}" for i in range(4))}]}}
    strategy: prefix_aware
"""
WHO = Principal("k", "k", team="t")


class Gateway:
    def __init__(self, tmp: Path, transport: httpx.AsyncBaseTransport, url: str, prefix: str,
                 backends: Runtime | None = None) -> None:  # fmt: skip
        tmp.mkdir(parents=True, exist_ok=True)
        self.states = ReplicaStates()
        self.feed = PrefixFeed(url, prefix, self.states, sync_s=0.01, timeout_s=0.2)
        deps = make_deps(transport, TokenCounter(), replicas=self.states)
        self.runtime: Runtime = runtime_from(tmp / "t.yaml", CONFIG, deps)
        if backends is not None:  # the same simulated replicas as the first gateway
            self.runtime.backends.clear()  # type: ignore[attr-defined]
            self.runtime.backends.update(backends.backends)  # type: ignore[attr-defined]
        self.records: list[CallRecord] = []
        self.keys: dict[str, list[int]] = {}  # each prompt's block keys, as routed
        self.pipeline = Pipeline(Recorder(self, TokenCounter()))  # type: ignore[arg-type]

    def submit(self, record: CallRecord) -> None:
        self.records.append(record)

    async def chat(self, messages: list[dict[str, Any]]) -> CallRecord:
        body = {"model": "chat", "messages": messages, "max_tokens": 2}
        call = Call(f"r{len(self.records)}", "openai", "chat.completions", "chat", body, False,
                    False, principal=WHO)  # fmt: skip
        reply = await self.pipeline.handle(call, self.runtime)
        reply.seal()
        await reply.done()
        assert isinstance(call.prefix, PrefixPrediction)
        self.keys[str(messages)] = call.prefix.hashes
        return self.records[-1]

    def holds(self, backend: str, hashes: list[int]) -> int:
        """Leading blocks of a prompt this gateway believes `backend` holds."""
        state = self.states.find((backend, "m"))
        index = state.prefix_index if state is not None else None
        return index.match(hashes) if index is not None else 0


def prompt(seed: int, words: int = 900) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    text = " ".join(rng.choice(["amber", "birch", "cedar", "dune", "ember"]) for _ in range(words))
    return [{"role": "user", "content": text}]


@pytest.fixture
async def transport() -> AsyncIterator[httpx.AsyncHTTPTransport]:
    t = httpx.AsyncHTTPTransport()
    yield t
    await t.aclose()


async def test_what_one_gateway_routed_the_other_knows(
    tmp_path: Path, transport: httpx.AsyncHTTPTransport
) -> None:
    with cache_prefix() as prefix:
        one = Gateway(tmp_path / "1", transport, REDIS_URL, prefix)
        two = Gateway(tmp_path / "2", transport, REDIS_URL, prefix, backends=one.runtime)
        first = await one.chat(prompt(1))
        where, keys = first.backend, one.keys[str(prompt(1))]
        assert where is not None and one.holds(where, keys) > 0
        assert two.holds(where, keys) == 0
        await one.feed.sync()
        await two.feed.sync()
        assert two.holds(where, keys) == one.holds(where, keys)
        # The next turn, through the other gateway, goes where the prefix is, and hits.
        turn = [
            *prompt(1),
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": "more"},
        ]
        second = await two.chat(turn)
        assert second.backend == where
        assert second.usage is not None and second.usage.cached_tokens > 0
        # A cleared index (the closed loop saw the replica restart) is cleared for all.
        state = one.states.find((where, "m"))
        assert state is not None and state.prefix_index is not None
        state.prefix_index.clear()
        await one.feed.sync()
        await two.feed.sync()
        assert two.holds(where, keys) == 0
        assert one.feed.sent >= 2 and two.feed.applied >= 2
        await one.feed.aclose()
        await two.feed.aclose()


async def test_a_gateway_that_starts_learns_what_the_fleet_routed(
    tmp_path: Path, transport: httpx.AsyncHTTPTransport
) -> None:
    with cache_prefix() as prefix:
        one = Gateway(tmp_path / "1", transport, REDIS_URL, prefix)
        served = [await one.chat(prompt(seed)) for seed in range(5)]
        await one.feed.sync()
        late = Gateway(tmp_path / "2", transport, REDIS_URL, prefix, backends=one.runtime)
        await late.feed.sync()
        for i, r in enumerate(served):
            assert late.holds(r.backend or "", one.keys[str(prompt(i))]) > 0
        await one.feed.aclose()
        await late.feed.aclose()


async def test_without_redis_each_gateway_routes_on_its_own(
    tmp_path: Path, transport: httpx.AsyncHTTPTransport
) -> None:
    with PrivateRedis() as private:
        g = Gateway(tmp_path, transport, private.url, "p:")
        private.kill()
        g.feed.start()
        records = [await g.chat(prompt(seed)) for seed in range(3)]
        assert all(r.status == 200 for r in records)
        again = await g.chat(prompt(0))
        assert again.backend == records[0].backend and again.usage is not None
        assert again.usage.cached_tokens > 0
        await g.feed.aclose()
