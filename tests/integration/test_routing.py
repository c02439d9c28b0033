"""The routing layer end to end in one process: the real pipeline, runtime and router in front
of simulated replicas whose faults are changed while they run (docs/routing.md)."""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.accounting.tokens import TokenCounter
from gateway.backends.sim import SimBackend
from gateway.call import Call, CallRecord, Principal
from gateway.errors import TollgateError
from gateway.pipeline import Pipeline
from gateway.recorder import Recorder
from gateway.routing.state import ReplicaStates
from gateway.runtime import Runtime, build_runtime
from gateway.sim.config import Faults, SimConfig, SimModel
from gateway.sim.server import SimServer
from tests.support.runtime import make_deps, runtime_from
from tests.support.servers import ThreadServer, free_port


class Clock:
    """The replicas' clock (circuit cooldowns), moved by the test."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Sink:
    def __init__(self) -> None:
        self.records: list[CallRecord] = []

    def submit(self, record: CallRecord) -> None:
        self.records.append(record)


def sims(*names: str, time_scale: float = 0, extra: str = "") -> str:
    return "\n".join(
        f"  {n}: {{type: sim, time_scale: {time_scale}, models: [{{name: m{extra}}}]}}"
        for n in names
    )


def chat(max_tokens: int = 3, stream: bool = False, **extra: Any) -> Call:
    body = {"model": "chat", "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": max_tokens, "stream": stream, **extra}  # fmt: skip
    return Call("r", "openai", "chat.completions", "chat", body, stream, False,
                principal=Principal("k", "k", team="t"))  # fmt: skip


class Harness:
    def __init__(self, runtime: Runtime, sink: Sink, states: ReplicaStates, clock: Clock) -> None:
        self.runtime = runtime
        self.sink = sink
        self.states = states
        self.clock = clock
        self.pipeline = Pipeline(Recorder(sink, TokenCounter()))  # type: ignore[arg-type]

    async def call(self, call: Call | None = None) -> str:
        """Runs one call to its end; the backend that served it, or the error's code."""
        try:
            reply = await self.pipeline.handle(call or chat(), self.runtime)
        except TollgateError as err:
            return f"error:{err.status}:{err.code or err.error_type}"
        if reply.stream is not None:
            async for _ in reply.stream:
                pass
            await reply.stream.close()
        else:
            reply.seal()
            await reply.done()
        return dict(reply.headers)["x-tollgate-backend"]

    async def many(self, count: int, concurrency: int = 10) -> collections.Counter[str]:
        results: collections.Counter[str] = collections.Counter()
        queue = iter(range(count))

        async def worker() -> None:
            for _ in queue:
                results[await self.call()] += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return results

    def state(self, backend: str) -> Any:
        return next(s for s in self.runtime.router.replica_states() if s.backend == backend)

    def sim(self, backend: str) -> SimServer:
        adapter = self.runtime.backends[backend]
        assert isinstance(adapter, SimBackend)
        return adapter.server


@pytest.fixture
async def transport() -> AsyncIterator[httpx.AsyncHTTPTransport]:
    t = httpx.AsyncHTTPTransport()
    yield t
    await t.aclose()


def harness(tmp_path: Path, config: str, transport: httpx.AsyncBaseTransport) -> Harness:
    clock = Clock()
    states = ReplicaStates(clock)
    deps = make_deps(transport, TokenCounter(), replicas=states)
    return Harness(runtime_from(tmp_path / "tollgate.yaml", config, deps), Sink(), states, clock)


THREE = f"""
version: 1
auth: {{keys: [{{name: t, key_sha256: "{"0" * 64}"}}]}}
backends:
{sims("a", "b", "c")}
models:
  chat:
    tiers: {{fp16: [{{backend: a, model: m}}, {{backend: b, model: m}}, {{backend: c, model: m}}]}}
    retry: {{attempts: 3, backoff_ms: 0}}
routing: {{circuit: {{failures: 3, cooldown_seconds: 30}}}}
"""


async def test_a_replica_answering_503_is_ejected_then_readmitted_with_no_client_error(
    tmp_path: Path, transport: httpx.AsyncHTTPTransport
) -> None:
    h = harness(tmp_path, THREE, transport)
    h.sim("b").faults = Faults(error_rate=1.0, error_statuses=(503,))
    served = await h.many(300)
    assert sum(served.values()) == 300 and not [k for k in served if k.startswith("error")]
    assert served["b"] == 0
    b = h.state("b")
    assert b.circuit == "open" and b.stats.circuit_opens == 1
    # Ejected at its third failure in a row; calls already on their way to it (at most one per
    # concurrent caller) failed too, and none was sent after.
    assert 3 <= b.stats.failures < 3 + 10
    retried = [r for r in h.sink.records if len(r.attempts) > 1]
    assert len(retried) == b.stats.failures
    assert all(r.attempts[0].status == 503 and r.attempts[0].backend == "b" for r in retried)

    h.sim("b").faults = Faults()  # b recovers; its cooldown runs out
    h.clock.now += 31
    served = await h.many(60)
    assert served["b"] > 0 and b.circuit == "closed"
    assert sum(served.values()) == 60 and not [k for k in served if k.startswith("error")]


async def test_a_replica_refusing_connections_is_ejected_then_readmitted(
    tmp_path: Path, transport: httpx.AsyncHTTPTransport
) -> None:
    port = free_port()
    config = THREE.replace(
        "  b: {type: sim, time_scale: 0, models: [{name: m}]}",
        f'  b: {{type: openai, base_url: "http://127.0.0.1:{port}/v1"}}',
    ).replace("routing:", "pricing: [{backend: b, free: true}]\nrouting:")
    h = harness(tmp_path, config, transport)
    served = await h.many(300)
    assert served["b"] == 0 and sum(served.values()) == 300
    assert not [k for k in served if k.startswith("error")]
    b = h.state("b")
    assert b.circuit == "open"

    model = SimModel(name="m")
    server = SimServer(SimConfig(time_scale=0, models=(model,)), TokenCounter())
    with ThreadServer(server.app, port=port):  # b comes up on its port
        h.clock.now += 31
        served = await h.many(60)
    assert served["b"] > 0 and b.circuit == "closed"
    assert not [k for k in served if k.startswith("error")]


async def test_a_stream_that_fails_after_its_first_chunk_is_not_retried(
    tmp_path: Path, transport: httpx.AsyncHTTPTransport
) -> None:
    h = harness(tmp_path, THREE, transport)
    for name in "abc":
        h.sim(name).faults = Faults(drop_rate=1.0)
    reply = await h.pipeline.handle(chat(max_tokens=20, stream=True), h.runtime)
    assert reply.stream is not None
    with pytest.raises(TollgateError) as info:
        async for _ in reply.stream:
            pass
    await reply.stream.close(error=info.value)  # as the API closes a stream that failed
    (record,) = h.sink.records
    assert len(record.attempts) == 1 and record.status == 200 and record.kind == "upstream_error"


async def test_retries_stop_at_the_deadline(
    tmp_path: Path, transport: httpx.AsyncHTTPTransport
) -> None:
    config = """
version: 1
auth: {mode: open}
backends:
  a: {type: sim, time_scale: 0, timeouts: {total: 0.4}, models: [{name: m}],
      faults: {error_rate: 1.0, error_statuses: [503]}}
models:
  chat:
    backend: a
    model: m
    retry: {attempts: 20, backoff_ms: 100, max_backoff_ms: 100000}
routing: {circuit: {failures: 1000}}
"""
    h = harness(tmp_path, config, transport)
    started, began = time.monotonic(), time.time()
    assert await h.call() == "error:503:upstream_exhausted"
    elapsed = time.monotonic() - started
    (record,) = h.sink.records
    # 100, 200 then 400 ms of back-off (each jittered down to half): the third pause would end
    # past the 0.4 s deadline, so no try starts after it, however slow the machine.
    assert 1 <= len(record.attempts) <= 3, record.attempts
    assert all(a.started_at < began + 0.4 for a in record.attempts)
    # Not the 20 tries and their back-off of minutes the retry policy alone would allow.
    assert elapsed < 2.0


async def test_an_upstream_retry_after_sets_the_cooldown_and_reaches_the_client(
    tmp_path: Path, transport: httpx.AsyncHTTPTransport
) -> None:
    config = THREE.replace("tiers: {fp16: [{backend: a, model: m}, {backend: b, model: m}, "
                           "{backend: c, model: m}]}", "backend: a\n    model: m")  # fmt: skip
    h = harness(tmp_path, config, transport)
    h.sim("a").faults = Faults(error_rate=1.0, error_statuses=(429,))  # retry-after: 1
    assert await h.call() == "error:429:upstream_rate_limited"
    a = h.state("a")
    assert a.circuit == "open" and a.seconds_closed() == pytest.approx(1.0)
    assert len(h.sink.records[0].attempts) == 1  # not hammered while it asked for a pause
    # Within the pause the client is told to wait, not sent to a replica asking for one.
    with pytest.raises(TollgateError) as info:
        await h.pipeline.handle(chat(), h.runtime)
    assert info.value.status == 429 and info.value.headers["retry-after"] == "1"
    h.sim("a").faults = Faults()
    h.clock.now += 1.0
    assert await h.call() == "a"


async def test_a_400_is_never_retried(tmp_path: Path, transport: httpx.AsyncHTTPTransport) -> None:
    h = harness(tmp_path, THREE, transport)
    # The simulator refuses a max_tokens beyond its context (as vLLM does) with a 400.
    result = await h.call(chat(max_tokens=10_000_000))
    assert result.startswith("error:400")
    (record,) = h.sink.records
    assert len(record.attempts) == 1 and record.attempts[0].status == 400
    assert all(s.circuit == "closed" and s.stats.failures == 0 for s in h.states)


SPEEDS = """
version: 1
auth: {mode: open}
backends:
  slow: {type: sim, time_scale: 0.5, models: [{name: m, speed: 1.0, slots: 64}]}
  fast: {type: sim, time_scale: 0.5, models: [{name: m, speed: 4.0, slots: 64}]}
models:
  chat: {tiers: {fp16: [{backend: slow, model: m}, {backend: fast, model: m}]}}
"""


async def test_least_outstanding_sends_more_calls_to_the_faster_replica(
    tmp_path: Path, transport: httpx.AsyncHTTPTransport
) -> None:
    h = harness(tmp_path, SPEEDS, transport)
    served = await h.many(200, concurrency=12)
    assert served["fast"] > 1.5 * served["slow"], served


def equal(count: int) -> str:
    names = [f"r{i}" for i in range(count)]
    replicas = ", ".join(f"{{backend: {n}, model: m}}" for n in names)
    return f"""
version: 1
auth: {{mode: open}}
backends:
{sims(*names, time_scale=0.02)}
models:
  chat: {{tiers: {{fp16: [{replicas}]}}}}
"""


async def test_least_outstanding_keeps_equal_replicas_within_a_fifth_of_the_mean(
    tmp_path: Path, transport: httpx.AsyncHTTPTransport
) -> None:
    h = harness(tmp_path, equal(4), transport)
    served = await h.many(800, concurrency=16)
    mean = sum(served.values()) / 4
    assert max(served.values()) <= 1.2 * mean, served
    assert all(s.in_flight == 0 for s in h.states)  # every path gave its count back


TIERED = """
version: 1
auth: {mode: open}
backends:
  big: {type: sim, time_scale: 0, models: [{name: big, input_price_per_mtok: 3, output_price_per_mtok: 15}]}
  small: {type: sim, time_scale: 0, models: [{name: small, input_price_per_mtok: 0.5, output_price_per_mtok: 1.5}]}
models:
  chat:
    tiers:
TIERS
    default_tier: int4
"""  # noqa: E501
FP16 = "      fp16: [{backend: big, model: big}]\n"
INT4 = "      int4: [{backend: small, model: small}]\n"


@pytest.mark.parametrize("reference", ["", "    reference: fp16\n"])
async def test_swapping_the_order_of_tiers_changes_no_saving(
    tmp_path: Path, transport: httpx.AsyncHTTPTransport, reference: str
) -> None:
    money = []
    for i, tiers in enumerate((FP16 + INT4, INT4 + FP16)):
        config = TIERED.replace("TIERS\n", tiers) + reference
        (tmp_path / str(i)).mkdir()
        h = harness(tmp_path / str(i), config, transport)
        assert await h.call() == "small"
        money.append(h.sink.records[0].money)
    assert money[0] == money[1]
    if reference:
        assert money[0].saving("tier_routing") > 0  # measured against fp16, whatever the order
    else:
        assert money[0].saving("tier_routing") == 0  # the reference is the default tier


async def test_a_reload_that_changes_one_replica_keeps_the_others_state(
    tmp_path: Path, transport: httpx.AsyncHTTPTransport
) -> None:
    h = harness(tmp_path, THREE, transport)
    a, b, c = (h.state(n) for n in "abc")
    a.enter()  # a call in flight on a
    for _ in range(3):
        b.failed()
    assert b.circuit == "open"
    changed = THREE.replace(
        "  c: {type: sim, time_scale: 0, models: [{name: m}]}",
        "  c: {type: sim, time_scale: 0, seed: 7, models: [{name: m}]}",
    )
    (tmp_path / "tollgate.yaml").write_text(changed)
    from gateway.config.loader import load_config

    deps = make_deps(transport, TokenCounter(), replicas=h.states)
    reloaded = build_runtime(load_config(tmp_path / "tollgate.yaml", env={}), deps, h.runtime)
    after = {s.backend: s for s in reloaded.router.replica_states()}
    assert after["a"] is a and a.in_flight == 1
    assert after["b"] is b and b.circuit == "open"
    assert after["c"] is not c and after["c"].stats.calls == 0
    a.leave()


BUDGETED = """
version: 1
auth: {mode: open}
backends:
  big: {type: sim, time_scale: 0, models: [{name: big, input_price_per_mtok: 3, output_price_per_mtok: 15}]}
  small: {type: sim, time_scale: 0, models: [{name: small, input_price_per_mtok: 0.5, output_price_per_mtok: 1.5}]}
models:
  chat:
    tiers: {int4: [{backend: small, model: small}], fp16: [{backend: big, model: big}]}
    default_tier: int4
    fallbacks: [fp16]
  cheap: {backend: small, model: small}
limits:
  budgets: [{name: t-day, scope: team, subject: t, usd: "0.005", window: day}]
"""  # noqa: E501


async def test_budgets_reserve_at_the_dearest_tier_the_plan_may_reach(
    tmp_path: Path, transport: httpx.AsyncHTTPTransport
) -> None:
    h = harness(tmp_path, BUDGETED, transport)
    # 1000 output tokens at fp16's $15/M is $0.015, over the $0.005 left: the fallback could
    # be reached, so the call is refused even though int4 would serve it for a tenth of that.
    assert await h.call(chat(max_tokens=1000)) == "error:429:budget_exceeded"
    cheap = chat(max_tokens=1000)
    cheap.model = cheap.body["model"] = "cheap"
    assert await h.call(cheap) == "small"
    (record,) = [r for r in h.sink.records if r.status == 200]
    # Settled at what was used: the team's spend is the served call's cost, not its hold.
    ledger = h.runtime.chain.plugins()[-1].limits.ledger
    spend = await ledger.spend("team", "day")
    assert spend["t"]["usd"] == record.money.cost > 0
