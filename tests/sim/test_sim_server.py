"""The simulator behaves like a serving engine in the ways that matter for cost."""

from __future__ import annotations

import asyncio
import base64
import math
import struct
import time

import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.accounting.tokens import TokenCounter
from gateway.sim.config import SimConfig
from tests.sim.conftest import chat_body, sim_client, sim_config

LONG = " ".join(f"word{i}" for i in range(300))


def metrics(text: str) -> dict[tuple[str, str], float]:
    """(sample name, replica) -> value, summed over other labels."""
    out: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = (sample.name, sample.labels.get("replica", ""))
            out[key] = out.get(key, 0.0) + sample.value
    return out


async def test_prefix_reuse_shortens_prefill_and_salt_isolates(tokens: TokenCounter) -> None:
    async with sim_client(sim_config(prefill_ms_per_token=1.0), tokens) as (_, client):
        first = await client.post("/v1/chat/completions", json=chat_body(LONG + " question one"))
        second = await client.post("/v1/chat/completions", json=chat_body(LONG + " question two"))
        salted = await client.post(
            "/v1/chat/completions", json=chat_body(LONG + " question two", cache_salt="tenant-b")
        )
    cached = [
        r.json()["usage"]["prompt_tokens_details"]["cached_tokens"] for r in (first, second, salted)
    ]
    assert cached[0] == 0 and cached[1] > 0 and cached[2] == 0
    assert cached[1] % 16 == 0
    prefill = [float(r.headers["x-sim-prefill-ms"]) for r in (first, second, salted)]
    assert prefill[1] < prefill[0] / 10
    prompt = second.json()["usage"]["prompt_tokens"]
    assert prefill[1] == pytest.approx((prompt - cached[1]) * 1.0)


async def test_eviction_at_capacity(tokens: TokenCounter) -> None:
    async with sim_client(sim_config(kv_blocks=8), tokens) as (server, client):
        a = chat_body(LONG)
        await client.post("/v1/chat/completions", json=a)
        await client.post("/v1/chat/completions", json=chat_body(LONG.replace("word", "other")))
        again = await client.post("/v1/chat/completions", json=a)
    assert again.json()["usage"]["prompt_tokens_details"]["cached_tokens"] == 0
    assert server.replicas["m"][0].cache.evictions > 0
    assert len(server.replicas["m"][0].cache) == 8


async def test_slots_full_means_the_next_request_waits(tokens: TokenCounter) -> None:
    config = sim_config(time_scale=0.01, slots=2, decode_ms_per_token=100.0)
    async with sim_client(config, tokens) as (_, client):
        body = chat_body("hi", max_tokens=40)  # 4 s of model time -> 40 ms wall
        tasks = [
            asyncio.create_task(client.post("/v1/chat/completions", json=body)) for _ in range(3)
        ]
        seen_waiting = 0.0
        deadline = time.monotonic() + 5
        while not all(t.done() for t in tasks) and time.monotonic() < deadline:
            sample = metrics((await client.get("/metrics")).text)
            if sample[("vllm:num_requests_running", "0")] == 2:
                seen_waiting = max(seen_waiting, sample[("vllm:num_requests_waiting", "0")])
            await asyncio.sleep(0.002)
        responses = await asyncio.gather(*tasks)
    assert seen_waiting == 1
    queued = sorted(float(r.headers["x-sim-queue-ms"]) for r in responses)
    decode = float(responses[0].headers["x-sim-decode-ms"])
    assert queued[0] < decode / 4, "the first two started at once"
    assert queued[2] > decode / 2, "the third waited for a slot"


async def test_decode_slows_as_the_batch_grows(tokens: TokenCounter) -> None:
    config = sim_config(time_scale=0.001, slots=8, decode_batch_penalty=0.1)
    async with sim_client(config, tokens) as (_, client):
        alone = await client.post("/v1/chat/completions", json=chat_body("a", 20))
        crowd = await asyncio.gather(
            *(client.post("/v1/chat/completions", json=chat_body(f"b{i}", 20)) for i in range(6))
        )
    alone_ms = float(alone.headers["x-sim-decode-ms"])
    assert max(float(r.headers["x-sim-decode-ms"]) for r in crowd) > alone_ms * 1.2


async def test_tier_speed_factor_holds_as_a_ratio(tokens: TokenCounter) -> None:
    config = SimConfig.model_validate_json(
        orjson.dumps(
            {
                "time_scale": 0,
                "models": [
                    {"name": "fp16", "tier": "fp16", "speed": 1.0},
                    {"name": "int4", "tier": "int4", "speed": 2.5},
                ],
            }
        )
    )
    async with sim_client(config, tokens) as (_, client):
        slow = await client.post(
            "/v1/chat/completions", json={**chat_body(LONG, 30), "model": "fp16"}
        )
        fast = await client.post(
            "/v1/chat/completions", json={**chat_body(LONG, 30), "model": "int4"}
        )
    for header in ("x-sim-prefill-ms", "x-sim-decode-ms"):
        ratio = float(slow.headers[header]) / float(fast.headers[header])
        assert ratio == pytest.approx(2.5, rel=1e-3), header
    assert fast.headers["x-sim-tier"] == "int4"


async def test_time_scale_keeps_ratios(tokens: TokenCounter) -> None:
    walls = {}
    for scale in (0.02, 0.04):
        async with sim_client(sim_config(time_scale=scale, decode_ms_per_token=50.0), tokens) as (
            _,
            client,
        ):
            start = time.perf_counter()
            r = await client.post("/v1/chat/completions", json=chat_body("x", 100))
            walls[scale] = time.perf_counter() - start
            model_seconds = (
                float(r.headers["x-sim-prefill-ms"]) + float(r.headers["x-sim-decode-ms"])
            ) / 1000
            assert walls[scale] >= model_seconds * scale * 0.95
    # 5 s of model time: 100 ms at 0.02 and 200 ms at 0.04.
    assert walls[0.04] / walls[0.02] == pytest.approx(2.0, rel=0.25)


async def test_metrics_parse_and_match_the_requests_sent(tokens: TokenCounter) -> None:
    async with sim_client(sim_config(replicas=2), tokens) as (_, client):
        usages = []
        for i in range(5):
            r = await client.post(
                "/v1/chat/completions",
                json=chat_body(LONG + str(i)),
                headers={"x-sim-replica": str(i % 2)},
            )
            usages.append(r.json()["usage"])
        text = (await client.get("/metrics")).text
    sample = metrics(text)
    total = lambda name: sample[(name, "0")] + sample[(name, "1")]  # noqa: E731
    assert total("vllm:request_success_total") == 5
    assert total("vllm:prompt_tokens_total") == sum(u["prompt_tokens"] for u in usages)
    assert total("vllm:generation_tokens_total") == sum(u["completion_tokens"] for u in usages)
    assert total("vllm:prefix_cache_queries_total") == sum(u["prompt_tokens"] for u in usages)
    assert total("vllm:prefix_cache_hits_total") == sum(
        u["prompt_tokens_details"]["cached_tokens"] for u in usages
    )
    assert total("vllm:e2e_request_latency_seconds_count") == 5
    assert total("vllm:time_to_first_token_seconds_count") == 5
    assert 0 < sample[("vllm:kv_cache_usage_perc", "0")] <= 1
    assert total("vllm:num_requests_running") == 0


async def test_output_is_deterministic_and_exactly_max_tokens(tokens: TokenCounter) -> None:
    async with sim_client(sim_config(), tokens) as (_, client):
        bodies = [
            (await client.post("/v1/chat/completions", json=chat_body("same", 37, seed=s))).json()
            for s in (1, 1, 2)
        ]
        stopped = (
            await client.post(
                "/v1/chat/completions",
                json=chat_body(
                    "same", 37, seed=1, stop=[bodies[0]["choices"][0]["message"]["content"][10:16]]
                ),
            )
        ).json()
    texts = [b["choices"][0]["message"]["content"] for b in bodies]
    assert texts[0] == texts[1] != texts[2]
    assert tokens.count(texts[0]) == 37 == bodies[0]["usage"]["completion_tokens"]
    assert bodies[0]["choices"][0]["finish_reason"] == "length"
    assert stopped["choices"][0]["finish_reason"] == "stop"
    assert len(stopped["choices"][0]["message"]["content"]) <= 10


async def test_stream_matches_non_stream(tokens: TokenCounter) -> None:
    async with sim_client(sim_config(), tokens) as (_, client):
        whole = (await client.post("/v1/chat/completions", json=chat_body("s", 12))).json()
        async with client.stream(
            "POST",
            "/v1/chat/completions",
            json=chat_body("s", 12, stream=True, stream_options={"include_usage": True}),
        ) as r:
            events = [line async for line in r.aiter_lines() if line.startswith("data: ")]
    chunks = [orjson.loads(e[6:]) for e in events[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == whole["choices"][0]["message"]["content"]
    assert events[-1] == "data: [DONE]"
    assert chunks[-1]["usage"]["completion_tokens"] == 12


async def test_embeddings_are_deterministic_unit_vectors(tokens: TokenCounter) -> None:
    config = SimConfig.model_validate_json(
        orjson.dumps(
            {"time_scale": 0, "models": [{"name": "e", "kind": "embedding", "dimensions": 64}]}
        )
    )
    async with sim_client(config, tokens) as (_, client):
        r = await client.post("/v1/embeddings", json={"model": "e", "input": ["a b", "a b", "c"]})
        b64 = await client.post(
            "/v1/embeddings", json={"model": "e", "input": "a b", "encoding_format": "base64"}
        )
    vectors = [d["embedding"] for d in r.json()["data"]]
    assert vectors[0] == vectors[1] != vectors[2]
    assert len(vectors[0]) == 64
    assert math.isclose(sum(v * v for v in vectors[0]), 1.0, rel_tol=1e-9)
    packed = base64.b64decode(b64.json()["data"][0]["embedding"])
    assert list(struct.unpack("<64f", packed)) == pytest.approx(vectors[0], abs=1e-6)


async def test_forced_tool_call(tokens: TokenCounter) -> None:
    tools = [
        {
            "type": "function",
            "function": {
                "name": "weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        }
    ]
    async with sim_client(sim_config(), tokens) as (_, client):
        r = await client.post(
            "/v1/chat/completions", json=chat_body("weather?", tools=tools, tool_choice="required")
        )
    choice = r.json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["tool_calls"][0]["function"]["name"] == "weather"


async def test_fault_injection(tokens: TokenCounter) -> None:
    async with sim_client(
        sim_config(faults={"error_rate": 1.0, "error_statuses": [503]}), tokens
    ) as (_, client):
        r = await client.post("/v1/chat/completions", json=chat_body("x"))
    assert r.status_code == 503 and r.json()["error"]["message"].startswith("injected")
    async with sim_client(sim_config(faults={"drop_rate": 1.0}), tokens) as (_, client):
        with pytest.raises(httpx.ReadError):
            async with client.stream(
                "POST", "/v1/chat/completions", json=chat_body("x", 10, stream=True)
            ) as stream:
                _ = [chunk async for chunk in stream.aiter_bytes()]
    async with sim_client(sim_config(faults={"added_latency_ms": 150}), tokens) as (_, client):
        start = time.perf_counter()
        await client.post("/v1/chat/completions", json=chat_body("x"))
        assert time.perf_counter() - start >= 0.15


async def test_unknown_model_is_404(tokens: TokenCounter) -> None:
    async with sim_client(sim_config(), tokens) as (_, client):
        r = await client.post("/v1/chat/completions", json={**chat_body("x"), "model": "zz"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"


@pytest.mark.parametrize("fidelity", [1.0, 0.5, 0.0])
async def test_a_tiers_fidelity_is_the_share_of_answers_the_reference_would_give(
    tokens: TokenCounter, fidelity: float
) -> None:
    """Two simulated tiers, the same seed: identical answers at fidelity 1.0; at 0.5 about half
    differ (each request's verdict fixed by the request, so asking again changes nothing)."""
    async with (
        sim_client(sim_config(), tokens) as (_, reference),
        sim_client(sim_config(fidelity=fidelity), tokens) as (_, tier),
    ):
        same = 0
        for i in range(200):
            body = chat_body(f"question {i}", max_tokens=6)
            a = (await reference.post("/v1/chat/completions", json=body)).json()
            b = (await tier.post("/v1/chat/completions", json=body)).json()
            again = (await tier.post("/v1/chat/completions", json=body)).json()
            text = b["choices"][0]["message"]["content"]
            assert again["choices"][0]["message"]["content"] == text
            same += text == a["choices"][0]["message"]["content"]
    assert abs(same / 200 - fidelity) <= 0.1, same
