"""Every call, whatever its outcome, ends in exactly one CallRecord."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from gateway.accounting.tokens import TokenCounter
from gateway.call import Call, CallRecord, Principal
from gateway.config.loader import load_config
from gateway.errors import ModelNotFound, PolicyDenied, ServiceUnavailable
from gateway.pipeline import Pipeline
from gateway.recorder import Recorder as CallRecorder
from gateway.runtime import Runtime, build_runtime
from tests.support.runtime import make_deps

CONFIG = """
version: 1
auth: {mode: open}
backends:
  sim:
    type: sim
    time_scale: 0
    models: [{name: m, tier: int4}]
models:
  chat: {tiers: {int4: [{backend: sim, model: m}]}}
policies:
  - use: max_tokens
    with: {limit: 50, action: deny}
"""


class Recorder:
    def __init__(self) -> None:
        self.records: list[CallRecord] = []

    def submit(self, record: CallRecord) -> None:
        self.records.append(record)


@pytest.fixture
async def runtime(tmp_path: Path, tokens: TokenCounter) -> Runtime:
    path = tmp_path / "tollgate.yaml"
    path.write_text(CONFIG)
    transport = httpx.AsyncHTTPTransport()
    yield build_runtime(load_config(path, env={}), make_deps(transport, tokens))
    await transport.aclose()


def call(max_tokens: int = 5, model: str = "chat", stream: bool = False) -> Call:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": max_tokens,
        "stream": stream,
    }
    return Call(
        "r",
        "openai",
        "chat.completions",
        model,
        body,
        stream,
        False,
        principal=Principal(key_id="k", name="k", team="t"),
    )


class Journal:
    """A durable sink that remembers what it was given, in order."""

    accepting = True

    def __init__(self) -> None:
        self.records: list[CallRecord] = []

    def append(self, record: CallRecord) -> None:
        self.records.append(record)


async def test_served_call_is_recorded_once_with_usage(runtime: Runtime) -> None:
    sink = Recorder()
    reply = await Pipeline(CallRecorder(sink, TokenCounter())).handle(call(), runtime)  # type: ignore[arg-type]
    assert reply.status == 200
    assert sink.records == [], "recorded only when the API is about to send the response"
    reply.seal()
    assert len(sink.records) == 1
    await reply.done()
    (record,) = sink.records
    assert (record.status, record.backend, record.tier) == (200, "sim", "int4")
    assert record.usage is not None and record.usage.output_tokens == 5
    assert record.principal.team == "t"


async def test_denied_and_unknown_calls_are_recorded_once(runtime: Runtime) -> None:
    sink = Recorder()
    pipeline = Pipeline(CallRecorder(sink, TokenCounter()))  # type: ignore[arg-type]
    with pytest.raises(PolicyDenied):
        await pipeline.handle(call(max_tokens=500), runtime)
    with pytest.raises(ModelNotFound):
        await pipeline.handle(call(model="nope"), runtime)
    assert [(r.status, r.error_type) for r in sink.records] == [
        (400, "invalid_request_error"),  # max_tokens over the key's limit: the request's fault
        (404, "invalid_request_error"),
    ]
    assert sink.records[0].decisions[0].plugin == "max_tokens"


async def test_stream_is_recorded_when_closed(runtime: Runtime) -> None:
    sink = Recorder()
    reply = await Pipeline(CallRecorder(sink, TokenCounter())).handle(call(stream=True), runtime)  # type: ignore[arg-type]
    assert reply.stream is not None and sink.records == []
    body = b"".join([chunk async for chunk in reply.stream])
    await reply.stream.close()
    await reply.stream.close()  # idempotent
    assert body.endswith(b"data: [DONE]\n\n")
    (record,) = sink.records
    assert record.stream and record.usage is not None and record.usage.output_tokens == 5


async def test_journal_has_the_call_before_a_stream_sends_its_last_event(runtime: Runtime) -> None:
    journal = Journal()
    pipeline = Pipeline(CallRecorder(Recorder(), TokenCounter(), journal))  # type: ignore[arg-type]
    reply = await pipeline.handle(call(stream=True), runtime)
    assert reply.stream is not None
    journaled_before: list[int] = []
    async for chunk in reply.stream:
        journaled_before.append(len(journal.records))
        if chunk.endswith(b"data: [DONE]\n\n"):
            break
    assert journaled_before[0] == 0 and journaled_before[-1] == 1
    await reply.stream.close()
    (record,) = journal.records
    assert record.usage is not None and record.usage.output_tokens == 5


async def test_a_full_journal_refuses_calls(runtime: Runtime) -> None:
    journal = Journal()
    journal.accepting = False
    pipeline = Pipeline(CallRecorder(Recorder(), TokenCounter(), journal))  # type: ignore[arg-type]
    with pytest.raises(ServiceUnavailable) as info:
        await pipeline.handle(call(), runtime)
    assert info.value.code == "audit_unavailable"
