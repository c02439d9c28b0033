"""Tracing through the real pipeline: one correctly attributed span tree per call (GenAI
semantic conventions + tollgate.*), for a plain call, a stream, a cache hit, a denial, an
upstream error and a refused request; W3C trace context accepted from the client and
propagated to the upstream; export sampling never hides a call from the rollups."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind, StatusCode

from gateway.accounting.tokens import TokenCounter
from gateway.call import Call, Principal
from gateway.errors import AuthenticationFailed, PolicyDenied, UpstreamRateLimited
from gateway.policies.chain import ChainEntry, PolicyChain
from gateway.runtime import Runtime
from gateway.telemetry.context import parse_traceparent, traceparent
from gateway.telemetry.export import SampledExport
from gateway.telemetry.otlp_json import JsonSpanExporter
from gateway.telemetry.spans import Peer
from tests.support.audit import CannedAnswer
from tests.support.fake_upstream import FakeUpstream
from tests.support.otlp import OtlpReceiver
from tests.support.runtime import make_deps, runtime_from
from tests.support.servers import ThreadServer
from tests.support.telemetry import TracedPipeline, trees

CONFIG = """
version: 1
auth: {mode: keys}
backends:
  fake:
    type: openai
    base_url: %s/v1
models:
  chat: {tiers: {fp16: [{backend: fake, model: fake-chat}]}}
  limited: {backend: fake, model: rate-limited}
pricing:
  - {backend: fake, input: 2.0, cached_input: 1.0, output: 8.0}
policies:
  - use: max_tokens
    with: {limit: 100, action: deny}
"""

ALICE = Principal(key_id="k-alice", name="alice", team="ml", org="acme")
CLIENT_TRACE = 0x0AF7651916CD43DD8448EB211C80319C
CLIENT_SPAN = 0xB7AD6B7169203331


class LookupCache(CannedAnswer):
    lookup = True


def make_call(rid: str, model: str = "chat", **extra: Any) -> Call:
    body: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 5,
        "temperature": 0.2,
        **extra,
    }
    return Call(rid, "openai", "chat.completions", model, body, body.get("stream") is True,
                False, principal=ALICE, raw_body=orjson.dumps(body))  # fmt: skip


@pytest.fixture(scope="module")
def upstream() -> Iterator[tuple[FakeUpstream, ThreadServer]]:
    fake = FakeUpstream()
    with ThreadServer(fake.app) as server:
        yield fake, server


@pytest.fixture
async def runtime(
    upstream: tuple[FakeUpstream, ThreadServer], tmp_path: Path
) -> AsyncIterator[Runtime]:
    transport = httpx.AsyncHTTPTransport()
    deps = make_deps(transport, TokenCounter())
    built = runtime_from(tmp_path / "t.yaml", CONFIG % upstream[1].url, deps)
    entries = [ChainEntry(LookupCache(None, None), "cache", False), *built.chain.entries()]  # type: ignore[arg-type]
    yield dataclasses.replace(built, chain=PolicyChain(entries))
    for backend in built.backends.values():
        await backend.aclose()
    await transport.aclose()


def traced(upstream: tuple[FakeUpstream, ThreadServer], **config: Any) -> TracedPipeline:
    peer = Peer("openai", "127.0.0.1", upstream[1].port)
    return TracedPipeline(peers={"fake": peer}, **config)


async def run_all(traced_: TracedPipeline, runtime: Runtime) -> None:
    pipeline = traced_.pipeline
    call = make_call("plain")
    call.traceparent = traceparent(CLIENT_TRACE, CLIENT_SPAN, True)
    reply = await pipeline.handle(call, runtime)
    reply.seal()
    await reply.done()
    reply = await pipeline.handle(make_call("stream", stream=True), runtime)
    assert reply.stream is not None
    async for _ in reply.stream:
        pass
    await reply.stream.close()
    reply = await pipeline.handle(make_call("cached", user="cache-me"), runtime)
    reply.seal()
    await reply.done()
    with pytest.raises(PolicyDenied):
        await pipeline.handle(make_call("denied", max_tokens=500), runtime)
    with pytest.raises(UpstreamRateLimited):
        await pipeline.handle(make_call("upstream-error", "limited"), runtime)
    pipeline.rejected(
        AuthenticationFailed("Incorrect API key provided."),
        runtime,
        ("bad-key", "openai", "chat.completions"),
        ("10.0.0.9", None),
    )
    await traced_.settle()


def names(children: list[ReadableSpan]) -> list[str]:
    return sorted(c.name for c in children)


def attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


async def test_one_span_tree_per_call_with_genai_attributes(
    upstream: tuple[FakeUpstream, ThreadServer], runtime: Runtime
) -> None:
    fake = upstream[0]
    seen = len(fake.headers)
    t = traced(upstream)
    t.start()
    await run_all(t, runtime)
    forest = trees(t.spans())
    assert set(forest) == {"plain", "stream", "cached", "denied", "upstream-error", "bad-key"}

    root, children = forest["plain"]
    a = attrs(root)
    assert root.name == "chat chat" and root.kind is SpanKind.SERVER
    assert names(children) == ["cache lookup", "chat fake-chat", "policies"]
    assert a["gen_ai.operation.name"] == "chat"
    assert a["gen_ai.provider.name"] == "openai"
    assert a["gen_ai.request.model"] == "chat"
    assert a["gen_ai.request.max_tokens"] == 5 and a["gen_ai.request.temperature"] == 0.2
    assert a["gen_ai.response.model"] == "fake-chat"
    assert a["gen_ai.response.id"] == "chatcmpl-fake"
    assert a["gen_ai.response.finish_reasons"] == ("stop",)
    assert a["gen_ai.usage.input_tokens"] == 11 and a["gen_ai.usage.output_tokens"] == 5
    assert a["gen_ai.usage.cache_read.input_tokens"] == 3
    assert a["tollgate.team"] == "ml" and a["tollgate.key.id"] == "k-alice"
    assert a["tollgate.tier"] == "fp16" and a["tollgate.cache"] == "bypass"
    assert a["tollgate.outcome"] == "served" and a["tollgate.backend"] == "fake"
    # 8 uncached input tokens at $2/M, 3 cached at $1/M, 5 output at $8/M
    assert a["tollgate.cost"] == pytest.approx((8 * 2 + 3 * 1 + 5 * 8) / 1e6)
    assert a["tollgate.counterfactual_cost"] >= a["tollgate.cost"] > 0
    assert "hi" not in orjson.dumps(a).decode().replace("chat", "")  # no prompt text
    assert not any(k.startswith("gen_ai.input") for k in a)
    assert root.status.status_code is StatusCode.UNSET

    # The client's trace context is the parent; the upstream saw our CLIENT span as its parent.
    assert root.context.trace_id == CLIENT_TRACE
    assert root.parent is not None and root.parent.span_id == CLIENT_SPAN
    assert root.parent.is_remote
    client_span = next(c for c in children if c.kind is SpanKind.CLIENT)
    sent = parse_traceparent(fake.headers[seen]["traceparent"])
    assert sent == (CLIENT_TRACE, client_span.context.span_id, True)
    u = attrs(client_span)
    assert u["server.address"] == "127.0.0.1" and u["server.port"] == upstream[1].port
    assert u["gen_ai.request.model"] == "fake-chat" and u["http.response.status_code"] == 200
    policies = next(c for c in children if c.name == "policies")
    assert root.start_time <= policies.start_time <= policies.end_time <= client_span.start_time
    assert client_span.end_time <= root.end_time

    root, children = forest["stream"]
    a = attrs(root)
    assert a["tollgate.stream"] is True and a["gen_ai.usage.output_tokens"] == 5
    assert a["gen_ai.response.id"] == "chatcmpl-fake"
    assert a["gen_ai.response.finish_reasons"] == ("stop",)
    assert a["tollgate.ttft_ms"] >= 0
    assert root.context.trace_id != CLIENT_TRACE and root.parent is None
    assert names(children) == ["cache lookup", "chat fake-chat", "policies"]

    root, children = forest["cached"]
    a = attrs(root)
    assert a["tollgate.outcome"] == "cache_hit" and a["tollgate.cache"] == "exact"
    assert a["tollgate.cost"] == 0 and a["tollgate.savings.exact_cache"] > 0
    assert names(children) == ["cache lookup", "policies"]
    lookup = next(c for c in children if c.name == "cache lookup")
    assert attrs(lookup)["tollgate.policy.plugin"] == "cache"

    root, children = forest["denied"]
    a = attrs(root)
    assert a["tollgate.outcome"] == "denied" and a["http.response.status_code"] == 400
    assert names(children) == ["cache lookup", "policies"]
    (decision,) = a["tollgate.policy.decisions"]
    assert decision.startswith("max_tokens deny:")
    assert root.status.status_code is StatusCode.UNSET

    root, children = forest["upstream-error"]
    a = attrs(root)
    assert a["tollgate.outcome"] == "upstream_error"
    assert a["error.type"] == "upstream_rate_limited"
    assert a["http.response.status_code"] == 429
    assert root.status.status_code is StatusCode.ERROR
    client_span = next(c for c in children if c.kind is SpanKind.CLIENT)
    assert client_span.status.status_code is StatusCode.ERROR

    root, children = forest["bad-key"]
    a = attrs(root)
    assert root.name == "chat" and children == []
    assert a["tollgate.outcome"] == "rejected" and a["http.response.status_code"] == 401
    await t.aclose()


async def test_sampling_limits_export_but_never_the_rollups(
    upstream: tuple[FakeUpstream, ThreadServer], runtime: Runtime
) -> None:
    t = traced(upstream, sample_ratio=0.0)
    t.start()
    await run_all(t, runtime)
    # Only the trace the client marked sampled is exported; every call is rolled up.
    exported = {s.context.trace_id for s in t.spans()}
    assert exported == {CLIENT_TRACE}
    assert t.telemetry.rollups.calls == 6
    pending = t.telemetry.rollups.peek()
    assert sum(sums[0] for sums in pending.spend.values()) == 6
    await t.aclose()


async def test_unsampled_client_trace_is_propagated_unsampled(
    upstream: tuple[FakeUpstream, ThreadServer], runtime: Runtime
) -> None:
    fake = upstream[0]
    t = traced(upstream)
    t.start()
    call = make_call("unsampled")
    call.traceparent = traceparent(CLIENT_TRACE, CLIENT_SPAN, False)
    call.tracestate = "vendor=1"
    seen = len(fake.headers)
    reply = await t.pipeline.handle(call, runtime)
    reply.seal()
    await reply.done()
    await t.settle()
    headers = fake.headers[seen]
    trace_id, _, sampled = parse_traceparent(headers["traceparent"]) or (0, 0, True)
    assert trace_id == CLIENT_TRACE and sampled is False
    assert headers["tracestate"] == "vendor=1"
    assert t.spans() == [] and t.telemetry.rollups.calls == 1
    await t.aclose()


async def test_otlp_json_export_carries_the_same_trees(
    upstream: tuple[FakeUpstream, ThreadServer], runtime: Runtime
) -> None:
    """`protocol: http/json`: what the receiver decodes (strictly, through the official
    protobuf JSON mapping) is the tree the in-memory exporter sees."""
    receiver = OtlpReceiver()
    with ThreadServer(receiver.app) as collector:
        t = traced(upstream)
        exporter = JsonSpanExporter(collector.url, {"x-token": "t"}, 5.0)
        t.telemetry.export = SampledExport(SimpleSpanProcessor(exporter))  # beside in-memory
        t.start()
        await run_all(t, runtime)
        await t.aclose()
    assert receiver.json_requests > 0 and receiver.headers[0]["x-token"] == "t"
    by_id = {s.span_id: s for s in receiver.spans}
    roots = {
        s.attributes["tollgate.request_id"]: s
        for s in receiver.spans
        if s.parent_span_id in (None, CLIENT_SPAN)
    }
    assert set(roots) == {"plain", "stream", "cached", "denied", "upstream-error", "bad-key"}
    plain = roots["plain"]
    assert plain.trace_id == CLIENT_TRACE and plain.parent_span_id == CLIENT_SPAN
    assert plain.name == "chat chat" and plain.service == "tollgate"
    assert plain.attributes["gen_ai.usage.input_tokens"] == 11  # int64 survives as a string
    assert plain.attributes["gen_ai.response.finish_reasons"] == ("stop",)
    assert plain.attributes["tollgate.cost"] == pytest.approx((8 * 2 + 3 * 1 + 5 * 8) / 1e6)
    children = sorted(s.name for s in receiver.spans if s.parent_span_id == plain.span_id)
    assert children == ["cache lookup", "chat fake-chat", "policies"]
    assert all(s.parent_span_id in by_id or s in roots.values() for s in receiver.spans)
