"""The quality guard: a rule that downgrades to a simulated INT4 tier whose answers agree with the
reference tier's only half the time suspends itself after its minimum samples, and its traffic
returns to the reference; at fidelity 1.0 it stays on. Guard calls never delay the client and
are charged to the ops budget, recorded as guard calls."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.accounting.tokens import TokenCounter
from gateway.call import Call, CallRecord, Principal
from gateway.pipeline import Pipeline
from gateway.policies.rules.engine import Rules
from gateway.recorder import Recorder
from gateway.runtime import Runtime
from gateway.side_calls import SideCaller
from tests.support.runtime import make_deps, runtime_from
from tests.support.wait import eventually

CONFIG = """
version: 1
auth: {mode: open}
backends:
  big: {type: sim, time_scale: REF_SCALE, models: [{name: m, input_price_per_mtok: 3, output_price_per_mtok: 15}]}
  small: {type: sim, time_scale: 0, models: [{name: m, fidelity: FIDELITY, input_price_per_mtok: 0.5, output_price_per_mtok: 1.5}]}
models:
  chat:
    tiers: {fp16: [{backend: big, model: m}], int4: [{backend: small, model: m}]}
    default_tier: fp16
    reference: fp16
limits:
  budgets: [{name: ops-guard, scope: team, subject: ops, usd: 10, window: month}]
policies:
  - use: rules
    with:
      rules:
        - name: downgrade
          match: {model: chat}
          actions: {route: {tier: int4}}
          quality_guard: {sample: 1.0, compare: text, min_agreement: 0.9, min_samples: 20,
                          window: 20, budget: ops-guard}
"""  # noqa: E501
USER = Principal("k", "alice", team="ml")


class Sink:
    def __init__(self) -> None:
        self.records: list[CallRecord] = []

    def submit(self, record: CallRecord) -> None:
        self.records.append(record)


def ask(i: int) -> Call:
    messages = [{"role": "user", "content": f"question number {i}"}]
    body: dict[str, Any] = {"model": "chat", "max_tokens": 6, "messages": messages}
    return Call(f"r{i}", "openai", "chat.completions", "chat", body, False, False, principal=USER)


class Harness:
    def __init__(self, tmp_path: Path, transport: httpx.AsyncBaseTransport, fidelity: float,
                 ref_scale: float = 0) -> None:  # fmt: skip
        side = SideCaller()
        deps = make_deps(transport, TokenCounter())
        deps = type(deps)(**{**{f: getattr(deps, f) for f in deps.__dataclass_fields__},
                             "side_calls": side})  # fmt: skip
        text = CONFIG.replace("FIDELITY", str(fidelity)).replace("REF_SCALE", str(ref_scale))
        self.runtime: Runtime = runtime_from(tmp_path / "t.yaml", text, deps)
        self.sink = Sink()
        self.pipeline = Pipeline(Recorder(self.sink, TokenCounter()))  # type: ignore[arg-type]
        side.bind(self.pipeline, lambda: self.runtime)
        self.rules = next(p for p in self.runtime.chain.plugins() if isinstance(p, Rules))
        self.guard = self.rules.guards["downgrade"]

    async def call(self, i: int) -> str:
        reply = await self.pipeline.handle(ask(i), self.runtime)
        reply.seal()
        await reply.done()
        return dict(reply.headers)["x-tollgate-tier"]

    async def settled(self) -> None:
        await eventually(lambda: not self.guard.comparing)


@pytest.fixture
async def transport() -> AsyncIterator[httpx.AsyncHTTPTransport]:
    t = httpx.AsyncHTTPTransport()
    yield t
    await t.aclose()


async def test_a_tier_that_disagrees_half_the_time_is_suspended_and_traffic_returns(
    tmp_path: Path, transport: httpx.AsyncHTTPTransport
) -> None:
    h = Harness(tmp_path, transport, fidelity=0.5)
    tiers = []
    for i in range(20):
        tiers.append(await h.call(i))
        await h.settled()  # one sample at a time: the 20th judgement is the one that suspends
    assert tiers == ["int4"] * 20
    state = h.guard.state
    # Suspended at its 20th sample (min_samples), not before: the answers agreed less than 90%.
    assert state.suspended and state.samples == 20 and state.agreement is not None
    assert state.agreement < 0.9
    assert await h.call(100) == "fp16"  # back on the reference tier
    last = h.sink.records[-1]
    assert any("route suspended by its quality guard" in d.reason for d in last.decisions)
    h.guard.resume()  # ops' decision
    assert await h.call(101) == "int4"


async def test_a_faithful_tier_keeps_its_traffic(
    tmp_path: Path, transport: httpx.AsyncHTTPTransport
) -> None:
    h = Harness(tmp_path, transport, fidelity=1.0)
    for i in range(30):
        assert await h.call(i) == "int4"
    await h.settled()
    assert not h.guard.state.suspended and h.guard.state.agreement == 1.0
    assert h.guard.state.samples == 30


async def test_guard_calls_never_delay_the_client_and_are_charged_to_the_ops_budget(
    tmp_path: Path, transport: httpx.AsyncHTTPTransport
) -> None:
    h = Harness(tmp_path, transport, fidelity=1.0, ref_scale=1.0)  # the reference is slow
    assert await h.call(1) == "int4"
    # The client has its whole answer; the reference call (~120 ms at fp16) is still running.
    assert h.guard.comparing
    assert [r.request_id for r in h.sink.records] == ["r1"]
    await h.settled()
    guard_call = h.sink.records[-1]
    assert guard_call.request_id == "r1-guard" and guard_call.tier == "fp16"
    assert guard_call.principal.team == "ops"
    assert any(d.action == "note" and "quality guard call for rule 'downgrade'" in d.reason
               for d in guard_call.decisions)  # fmt: skip
    ledger = h.rules.limits.ledger  # type: ignore[union-attr]
    spend = await ledger.spend("team", "month")
    assert spend["ops"]["usd"] == guard_call.money.cost > 0
    assert "ml" not in spend or spend["ml"]["usd"] == h.sink.records[0].money.cost
    await asyncio.sleep(0)
