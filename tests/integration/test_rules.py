"""The `rules` policy in the real pipeline: each condition and action changes the call as
docs/policies.md says, precedence and `stop` are deterministic, shadow rules change nothing yet
are recorded with what they would have cost, and bad rules are config errors at file:line."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from gateway.accounting.limits import budget_counter, budget_subject
from gateway.accounting.tokens import TokenCounter
from gateway.call import Call, CallRecord, Principal
from gateway.config.loader import load_config
from gateway.errors import ConfigError, TollgateError
from gateway.pipeline import Pipeline
from gateway.recorder import Recorder
from gateway.runtime import Runtime
from gateway.stores.counters import Charge
from tests.support.runtime import make_deps, runtime_from

BASE = """
version: 1
auth: {mode: open}
backends:
  big: {type: sim, time_scale: 0, models: [{name: big, input_price_per_mtok: 3, output_price_per_mtok: 15}]}
  small: {type: sim, time_scale: 0, models: [{name: small, input_price_per_mtok: 0.5, output_price_per_mtok: 1.5}]}
models:
  chat:
    tiers: {fp16: [{backend: big, model: big}], int4: [{backend: small, model: small}]}
    default_tier: fp16
  cheap: {backend: small, model: small}
limits:
  timezone: Europe/Paris
  budgets:
    - {name: team-month, scope: team, subject: "*", usd: 1, window: month, enforcement: soft}
"""  # noqa: E501
ML = Principal("k-ml", "alice", user="u1", team="ml", org="acme", tags=("batch",))
WEB = Principal("k-web", "bob", team="web")


class Sink:
    def __init__(self) -> None:
        self.records: list[CallRecord] = []

    def submit(self, record: CallRecord) -> None:
        self.records.append(record)


class Clock:
    def __init__(self, when: datetime) -> None:
        self.now = when.timestamp()

    def __call__(self) -> float:
        return self.now


def rules(text: str) -> str:
    return BASE + "policies:\n  - use: rules\n    with:\n      rules:\n" + text


def call(principal: Principal = ML, model: str = "chat", headers: dict[str, str] | None = None,
         stream: bool = False, **body: Any) -> Call:  # fmt: skip
    payload: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": "hi"}],
                               "max_tokens": 5, "stream": stream, **body}  # fmt: skip
    raw = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    return Call("r", "openai", "chat.completions", model, payload, stream, False,
                principal=principal, raw_headers=raw)  # fmt: skip


class Harness:
    def __init__(self, runtime: Runtime, sink: Sink, clock: Clock) -> None:
        self.runtime, self.sink, self.clock = runtime, sink, clock
        self.pipeline = Pipeline(Recorder(sink, TokenCounter()))  # type: ignore[arg-type]

    async def run(self, c: Call) -> tuple[dict[str, str], CallRecord]:
        reply = await self.pipeline.handle(c, self.runtime)
        if reply.stream is not None:
            async for _ in reply.stream:
                pass
            await reply.stream.close()
        else:
            reply.seal()
            await reply.done()
        return dict(reply.headers), self.sink.records[-1]


@pytest.fixture
async def transport() -> AsyncIterator[httpx.AsyncHTTPTransport]:
    t = httpx.AsyncHTTPTransport()
    yield t
    await t.aclose()


def harness(
    tmp_path: Path, text: str, transport: httpx.AsyncBaseTransport, when: datetime | None = None
) -> Harness:
    clock = Clock(when or datetime(2027, 3, 10, 14, 0, tzinfo=ZoneInfo("Europe/Paris")))
    deps = make_deps(transport, TokenCounter(), clock=clock, zone="Europe/Paris")
    return Harness(runtime_from(tmp_path / "t.yaml", text, deps), Sink(), clock)


TO_INT4 = "        - {{name: r, match: {match}, actions: {{route: {{tier: int4}}}}}}\n"


@pytest.mark.parametrize(
    ("match", "hit", "miss"),
    [
        ("{model: chat}", call(), call(model="cheap")),
        ("{team: ml}", call(), call(WEB)),
        ("{key: [alice, carol]}", call(), call(WEB)),
        ("{user: u1}", call(), call(WEB)),
        ("{org: acme}", call(), call(WEB)),
        ("{tags: [batch, nightly]}", call(), call(WEB)),
        ("{headers: {x-tollgate-priority: low}}", call(headers={"X-Tollgate-Priority": "low"}),
         call(headers={"x-tollgate-priority": "high"})),
        ("{headers: {x-batch: '*'}}", call(headers={"x-batch": "1"}), call()),
        ("{endpoint: chat.completions, stream: true}", call(stream=True), call()),
        ("{max_tokens: {max: 10}}", call(), call(max_tokens=500)),
        ("{prompt_tokens: {min: 100}}", call(messages=[{"role": "user", "content": "w " * 300}]),
         call()),
        ("{tools: true}", call(tools=[{"type": "function", "function": {"name": "f"}}]), call()),
        ("{json_mode: true}", call(response_format={"type": "json_object"}), call()),
    ],
)  # fmt: skip
async def test_each_condition_routes_what_it_matches_and_nothing_else(
    tmp_path: Path, transport: httpx.AsyncHTTPTransport, match: str, hit: Call, miss: Call
) -> None:
    h = harness(tmp_path, rules(TO_INT4.format(match=match)), transport)
    headers, record = await h.run(hit)
    assert (headers["x-tollgate-tier"], headers["x-tollgate-rules"]) == ("int4", "r")
    assert ("rules", "route", "rule 'r': route to tier int4") in [
        (d.plugin, d.action, d.reason) for d in record.decisions
    ]
    headers, record = await h.run(miss)
    assert headers.get("x-tollgate-tier") != "int4" and "x-tollgate-rules" not in headers


@pytest.mark.parametrize(
    ("when", "hits"),
    [
        (datetime(2027, 3, 10, 23, 30), True),  # Wednesday night
        (datetime(2027, 3, 11, 5, 59), True),  # Thursday before six: still Wednesday's night
        (datetime(2027, 3, 11, 6, 0), False),
        (datetime(2027, 3, 13, 23, 0), False),  # Saturday: not a listed night
        (datetime(2027, 3, 28, 3, 30), False),  # the DST change's early hours: Saturday night
        (datetime(2027, 3, 29, 1, 0), False),  # Monday 01:00 belongs to Sunday night
        (datetime(2027, 3, 30, 1, 0), True),  # Tuesday 01:00: Monday night, after the change
        (datetime(2027, 3, 31, 22, 0), True),  # the last day of the month, at the edge
    ],
)
async def test_a_time_window_is_read_in_the_configured_zone_and_wraps_midnight(
    tmp_path: Path, transport: httpx.AsyncHTTPTransport, when: datetime, hits: bool
) -> None:
    match = "{time: {days: [mon, tue, wed, thu, fri], hours: '22:00-06:00'}}"
    zone = ZoneInfo("Europe/Paris")
    h = harness(tmp_path, rules(TO_INT4.format(match=match)), transport, when.replace(tzinfo=zone))
    headers, _ = await h.run(call())
    assert (headers["x-tollgate-tier"] == "int4") is hits


async def test_a_team_at_80_percent_of_its_budget_is_downgraded_below_it_it_is_not(
    tmp_path: Path, transport: httpx.AsyncHTTPTransport
) -> None:
    text = rules(TO_INT4.format(match="{budget: {name: team-month, used_at_least: 0.8}}"))
    h = harness(tmp_path, text, transport)
    headers, _ = await h.run(call())
    assert headers["x-tollgate-tier"] == "fp16"  # no counter yet: cannot tell, no match
    limits = h.runtime.chain.plugins()[0].limits
    rule = limits.budgets[0]
    subject = budget_subject(rule, ML, "chat")
    _, stem = budget_counter(rule, subject, h.clock(), limits.zone)
    store = limits.ledger.store
    # The first call created the counter (the soft budget counts it); bring it near 80%.
    await store.settle([Charge(f"{stem}:usd", 790_000_000, None, 3600)], [])
    h.clock.now += 2  # past the one-second cache of the counter
    headers, _ = await h.run(call())
    assert headers["x-tollgate-tier"] == "fp16"  # $0.79 and a bit, of $1
    await store.settle([Charge(f"{stem}:usd", 20_000_000, None, 3600)], [])
    h.clock.now += 2
    headers, _ = await h.run(call())
    assert headers["x-tollgate-tier"] == "int4"
    headers, _ = await h.run(call(WEB))  # another team's counter is its own
    assert headers["x-tollgate-tier"] == "fp16"


async def test_actions_cap_set_deny_and_label(
    tmp_path: Path, transport: httpx.AsyncHTTPTransport
) -> None:
    text = rules(
        "        - {name: capped, match: {team: ml}, actions: {max_tokens: {cap: 3}, "
        "tags: [capped]}}\n"
        "        - {name: fixed, match: {team: web}, actions: {max_tokens: {set: 2}, "
        "labels: {cost-centre: web-42}}}\n"
        "        - {name: nope, match: {headers: {x-block: '1'}}, "
        "actions: {deny: {message: 'Blocked by policy.', status: 403}}}\n"
    )
    h = harness(tmp_path, text, transport)
    headers, record = await h.run(call(max_tokens=50))
    assert record.body is not None and record.body["max_tokens"] == 3
    assert headers["x-tollgate-max-tokens"] == "3; requested=50"
    assert record.usage is not None and record.usage.output_tokens == 3
    headers, record = await h.run(call(WEB, max_tokens=1))
    assert record.body is not None and record.body["max_tokens"] == 2
    with pytest.raises(TollgateError) as info:
        await h.run(call(headers={"x-block": "1"}))
    assert (info.value.status, info.value.code) == (403, "rule_denied")
    assert info.value.message == "Blocked by policy."
    assert h.sink.records[-1].decisions[-1].reason == "rule 'nope': Blocked by policy."


async def test_the_first_matching_rule_wins_each_action_and_stop_ends_evaluation(
    tmp_path: Path, transport: httpx.AsyncHTTPTransport
) -> None:
    text = rules(
        "        - {name: first, match: {team: ml}, actions: {route: {tier: int4}}}\n"
        "        - {name: second, match: {team: ml}, actions: {route: {tier: fp16}, "
        "max_tokens: {cap: 2}}, stop: true}\n"
        "        - {name: third, match: {team: ml}, actions: {max_tokens: {cap: 1}}}\n"
    )
    h = harness(tmp_path, text, transport)
    headers, record = await h.run(call())
    assert headers["x-tollgate-tier"] == "int4" and headers["x-tollgate-rules"] == "first,second"
    assert record.body is not None and record.body["max_tokens"] == 2  # third never evaluated
    reasons = [d.reason for d in record.decisions if d.plugin == "rules"]
    assert reasons == [
        "rule 'first': route to tier int4",
        "rule 'second': route overridden by an earlier rule; max_tokens capped at 2 (asked 5)",
    ]


async def test_a_shadow_rule_changes_nothing_and_is_recorded_with_what_it_would_have_cost(
    tmp_path: Path, transport: httpx.AsyncHTTPTransport
) -> None:
    text = rules(
        "        - {name: try-int4, mode: shadow, match: {team: ml}, "
        "actions: {route: {tier: int4}}}\n"
    )
    h = harness(tmp_path, text, transport)
    headers, record = await h.run(call())
    assert headers["x-tollgate-tier"] == "fp16" and headers["x-tollgate-rules-shadow"] == "try-int4"
    usage = record.usage
    assert usage is not None
    at_int4 = usage.input_tokens * 500 + usage.output_tokens * 1500
    assert record.money.shadows == (("try-int4", record.money.cost - at_int4),)
    shadows = [d for d in record.decisions if d.action == "shadow"]
    assert [d.enforced for d in shadows] == [False, False]
    assert "would save $" in shadows[-1].reason


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        ("{name: r, actions: {route: {tier: int8}}}",
         "rules[0].actions.route.tier: none of its models has a tier 'int8' (tiers: default, "
         "fp16, int4)"),
        ("{name: r, match: {model: cheap}, actions: {route: {tier: int4}}}",
         "rules[0].actions.route.tier: model 'cheap' has no tier 'int4' (tiers: default)"),
        ("{name: r, match: {model: chat}, actions: {route: {alias: nowhere}}}",
         "rules[0].actions.route.alias: unknown model alias 'nowhere'"),
        ("{name: r, match: {budget: {name: ghost, used_at_least: 0.5}}, "
         "actions: {route: {alias: cheap}}}",
         "rules[0].match.budget.name: unknown budget 'ghost' (budgets: team-month)"),
        ("{name: r, match: {colour: red}, actions: {route: {alias: cheap}}}",
         "rules[0].match.colour: unknown key (not allowed here)"),
        ("{name: r, match: {max_tokens: {min: 9, max: 3}}, actions: {route: {alias: cheap}}}",
         "rules[0].match.max_tokens: Value error, min (9) is above max (3)"),
        ("{name: r, match: {time: {hours: '9-17'}}, actions: {route: {alias: cheap}}}",
         "rules[0].match.time.hours: Value error, hours must be HH:MM-HH:MM"),
        ("{name: r, match: {model: chat}}", "rules[0].actions: required key is missing"),
        ("{name: r, actions: {defer: {max_wait_seconds: -1}}}",
         "rules[0].actions.defer.max_wait_seconds: Input should be greater than or equal to 0"),
        ("{name: r, actions: {defer: {wait: 5}}}",
         "rules[0].actions.defer.max_wait_seconds: required key is missing"),
    ],
)  # fmt: skip
def test_bad_rules_are_config_errors_at_file_and_line(
    tmp_path: Path, rule: str, expected: str
) -> None:
    path = tmp_path / "tollgate.yaml"
    path.write_text(rules(f"        - {rule}\n"))
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    found = [p.split(": ", 1)[1] for p in info.value.problems]
    assert any(f.startswith("policies[0].with." + expected) for f in found), found
    assert all(p.startswith(f"{path}:") for p in info.value.problems)


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
async def test_what_shadow_rules_would_save_is_summed_in_the_rollups(
    tmp_path: Path, transport: httpx.AsyncHTTPTransport, kind: str
) -> None:
    from gateway.telemetry.queries import Range, shadow_savings
    from tests.support.audit import audit_engine
    from tests.support.telemetry import TracedPipeline

    text = rules(
        "        - {name: try-int4, mode: shadow, match: {team: ml}, "
        "actions: {route: {tier: int4}}}\n"
    )
    with audit_engine(kind, tmp_path) as engine:
        runtime = runtime_from(tmp_path / "t.yaml", text, make_deps(transport, TokenCounter()))
        traced = TracedPipeline(engine)
        traced.start()
        for i in range(5):
            reply = await traced.pipeline.handle(call(messages=[
                {"role": "user", "content": f"hello {i}"}]), runtime)  # fmt: skip
            reply.seal()
            await reply.done()
        await traced.settle()
        await traced.telemetry.flush()
        await traced.aclose()
        rows = shadow_savings(engine, Range.last(3600, time.time()))
    assert [(r.rule, r.calls) for r in rows] == [("try-int4", 5)]
    assert rows[0].nanos > 0
