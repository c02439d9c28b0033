"""Embedding coalescing: a lone call goes at once; calls that arrive while one is in flight go
as one upstream call, split back with each caller's own vectors and its share of the usage; a
refused merged call is retried per caller."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from gateway.accounting.tokens import TokenCounter
from gateway.backends.base import UpstreamRequest, UpstreamResponse
from gateway.backends.coalesce import Coalescer, _shares
from gateway.call import Usage


class Upstream:
    """Embeds each input as [its length]; refuses inputs that say "bad"; can be held open."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.gate = asyncio.Event()
        self.gate.set()

    async def send(self, request: UpstreamRequest) -> UpstreamResponse:
        self.bodies.append(dict(request.body))
        await self.gate.wait()
        inputs = request.body["input"]
        inputs = [inputs] if isinstance(inputs, str) else inputs
        if any(isinstance(t, str) and "bad" in t for t in inputs):
            return UpstreamResponse(400, (), b'{"error": {"message": "bad input"}}')
        data = [{"object": "embedding", "index": i, "embedding": [float(len(str(t)))]}
                for i, t in enumerate(inputs)]  # fmt: skip
        total = 10 * len(inputs)
        body = orjson.dumps({"object": "list", "data": data, "model": "e",
                             "usage": {"prompt_tokens": total, "total_tokens": total}})  # fmt: skip
        return UpstreamResponse(200, (), body, Usage(total))


def request(inputs: Any, **extra: Any) -> UpstreamRequest:
    return UpstreamRequest("embeddings", "e", {"model": "e", "input": inputs, **extra}, False,
                           False, "r")  # fmt: skip


def vectors(response: UpstreamResponse) -> list[tuple[int, float]]:
    return [(d["index"], d["embedding"][0]) for d in orjson.loads(response.body)["data"]]


async def test_a_lone_call_goes_at_once_and_concurrent_ones_go_together() -> None:
    up = Upstream()
    co = Coalescer(up.send, TokenCounter(), window_s=0.01, max_inputs=100)
    up.gate.clear()
    lone = asyncio.create_task(co.send(request("first")))
    await asyncio.sleep(0)
    assert up.bodies == [{"model": "e", "input": "first"}], "sent without waiting"
    others = [asyncio.create_task(co.send(request(x))) for x in (["aa", "bbbb"], "c", ["ddd"])]
    await asyncio.sleep(0.05)
    up.gate.set()
    first, *rest = await asyncio.gather(lone, *others)
    assert len(up.bodies) == 2 and up.bodies[1]["input"] == ["aa", "bbbb", "c", "ddd"]
    assert co.merged == 1
    assert vectors(first) == [(0, 5.0)]
    assert [vectors(r) for r in rest] == [[(0, 2.0), (1, 4.0)], [(0, 1.0)], [(0, 3.0)]]
    shares = [r.usage.input_tokens for r in rest]  # type: ignore[union-attr]
    assert sum(shares) == 40, "the upstream's usage, split without losing a token"
    assert all(
        orjson.loads(r.body)["usage"]["prompt_tokens"] == s
        for r, s in zip(rest, shares, strict=True)
    )


async def test_a_refused_merged_call_is_retried_per_caller() -> None:
    up = Upstream()
    co = Coalescer(up.send, TokenCounter(), window_s=0.01, max_inputs=100)
    up.gate.clear()
    lone = asyncio.create_task(co.send(request("x")))
    await asyncio.sleep(0)
    good, bad = (asyncio.create_task(co.send(request(t))) for t in ("fine", "bad one"))
    await asyncio.sleep(0.05)
    up.gate.set()
    await lone
    assert (await good).status == 200 and vectors(await good) == [(0, 4.0)]
    assert (await bad).status == 400, "only the caller with the bad input fails"


async def test_different_asks_and_token_arrays_do_not_merge() -> None:
    up = Upstream()
    co = Coalescer(up.send, TokenCounter(), window_s=0.01, max_inputs=100)
    up.gate.clear()
    lone = asyncio.create_task(co.send(request("x")))
    await asyncio.sleep(0)
    calls = [co.send(request("a", dimensions=64)), co.send(request("b", dimensions=128)),
             co.send(request([1, 2, 3]))]  # fmt: skip
    tasks = [asyncio.create_task(c) for c in calls]
    await asyncio.sleep(0.05)
    up.gate.set()
    await asyncio.gather(lone, *tasks)
    assert co.merged == 0 and len(up.bodies) == 4


async def test_a_full_group_goes_before_its_window() -> None:
    up = Upstream()
    co = Coalescer(up.send, TokenCounter(), window_s=60, max_inputs=3)
    up.gate.clear()
    lone = asyncio.create_task(co.send(request("x")))
    await asyncio.sleep(0)
    tasks = [asyncio.create_task(co.send(request(t))) for t in ("a", "b", "c")]
    await asyncio.sleep(0.01)
    assert len(up.bodies) == 2, "three inputs fill the group: sent without waiting 60 s"
    up.gate.set()
    await asyncio.gather(lone, *tasks)


@pytest.mark.parametrize(
    ("total", "counts", "expected"),
    [(10, [1, 1, 1], [4, 3, 3]), (7, [0, 0], [4, 3]), (None, [2, 5], [2, 5]), (9, [3, 6], [3, 6])],
)
def test_usage_shares_add_up(total: int | None, counts: list[int], expected: list[int]) -> None:
    assert _shares(total, counts) == expected
