"""Telemetry pieces on their own: W3C trace context, sampling, backend peers, the metric book
(OTLP data model and Prometheus text), rollup rows across granularities, percentiles from the
histogram, and the `telemetry:` config's errors."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, TraceFlags
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.registry import Collector

from gateway.call import Money, Usage
from gateway.config.loader import load_config
from gateway.errors import ConfigError
from gateway.telemetry.context import TraceStarter, parse_traceparent, traceparent
from gateway.telemetry.facts import CallFacts
from gateway.telemetry.metrics import MetricBook
from gateway.telemetry.queries import Range
from gateway.telemetry.rollups import Pending, RollupProcessor, latency_bin, rows_of
from gateway.telemetry.spans import Peer, peer_of
from gateway.telemetry.tables import SUMS

VALID = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (VALID, (0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331, True)),
        (VALID[:-2] + "00", (0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331, False)),
        (" " + VALID.upper() + " ", (0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331, True)),
        (
            "01" + VALID[2:] + "-future",
            (0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331, True),
        ),
        (VALID + "-extra", None),  # version 00 has exactly four fields
        ("ff" + VALID[2:], None),  # version ff is invalid
        ("00-" + "0" * 32 + "-b7ad6b7169203331-01", None),  # all-zero trace id
        ("00-0af7651916cd43dd8448eb211c80319c-" + "0" * 16 + "-01", None),
        ("00-0af7651916cd43dd8448eb211c80319g-b7ad6b7169203331-01", None),  # not hex
        ("00-0af7651916cd43dd8448eb211c80319-cb7ad6b7169203331-01", None),  # lengths
        ("garbage", None),
        (None, None),
    ],
)
def test_traceparent_parsing(header: str | None, expected: tuple[int, int, bool] | None) -> None:
    assert parse_traceparent(header) == expected


def test_traceparent_round_trip_and_sampling() -> None:
    assert traceparent(0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331, True) == VALID
    never, always = TraceStarter(0.0), TraceStarter(1.0)
    assert not any(never.start(None).sampled for _ in range(200))
    assert all(always.start(None).sampled for _ in range(200))
    half = sum(TraceStarter(0.5).start(None).sampled for _ in range(4000))
    assert 1700 < half < 2300
    # A client's decision wins over the ratio, both ways; its trace id is kept.
    assert (
        never.start(VALID).sampled
        and never.start(VALID).trace_id == 0x0AF7651916CD43DD8448EB211C80319C
    )
    assert not always.start(VALID[:-2] + "00").sampled
    ids = always.start(VALID, "k=v")
    assert ids.parent_span_id == 0xB7AD6B7169203331 and ids.tracestate == "k=v"
    assert len({ids.root_span_id, ids.upstream_span_id}) == 2
    assert parse_traceparent(TraceStarter.header(ids)) == (ids.trace_id, ids.upstream_span_id, True)


class _Backend:
    def __init__(self, type_: str, base_url: str | None = None) -> None:
        self.type = type_
        self.base_url = base_url


def test_backend_peers() -> None:
    assert peer_of(_Backend("openai", "https://api.openai.com/v1")) == Peer(
        "openai", "api.openai.com", 443
    )
    assert peer_of(_Backend("openai", "http://10.0.0.5:8000/v1")) == Peer(
        "openai", "10.0.0.5", 8000
    )
    assert peer_of(_Backend("anthropic", "https://api.anthropic.com")).provider == "anthropic"
    assert peer_of(_Backend("sim")) == Peer("tollgate.sim")


def _facts(minute: int, *, savings: tuple[tuple[str, int], ...] = (), **changes: Any) -> CallFacts:
    """A served chat call that started in epoch minute `minute`, as the rollups and metrics see
    it: $0.000123456 against $0.0002, 10 tokens in and 4 out, 250 ms."""
    start = minute * 60 * 10**9
    facts = CallFacts(
        operation="chat", provider="openai", model="chat", team="ml", tier="", key_id="k1",
        key_name="alice", cache="miss", outcome="served", stream=False, error_type="",
        start_ns=start, end_ns=start + 250 * 10**6, ttft_ms=None, usage=Usage(10, 4),
        money=Money(123_456, 200_000, savings),
    )  # fmt: skip
    return replace(facts, **changes)


def _root(minute: int, **attrs: object) -> ReadableSpan:
    base: dict[str, object] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "chat",
        "tollgate.outcome": "served",
        "tollgate.cache": "miss",
        "tollgate.key.id": "k1",
        "tollgate.key.name": "alice",
        "tollgate.team": "ml",
        "tollgate.cost": 0.000123456,
        "tollgate.counterfactual_cost": 0.0002,
        "gen_ai.usage.input_tokens": 10,
        "gen_ai.usage.output_tokens": 4,
        **attrs,
    }
    start = minute * 60 * 10**9
    return ReadableSpan(
        "chat chat",
        SpanContext(1, 2, False, TraceFlags(1)),
        kind=SpanKind.SERVER,
        attributes=base,  # type: ignore[arg-type]
        start_time=start,
        end_time=start + 250 * 10**6,
    )


def test_metric_book_exports_otlp_and_prometheus() -> None:
    book = MetricBook()
    book.add(_facts(1))
    book.add(_facts(1, stream=True, ttft_ms=40.0))
    book.add(_facts(1, team="web", savings=(("tier_routing", 50_000),)))
    data = book.metrics_data(Resource.create({"service.name": "t"}), InstrumentationScope("t"))
    metrics = {m.name: m for m in data.resource_metrics[0].scope_metrics[0].metrics}
    assert set(metrics) == {
        "gen_ai.client.token.usage", "gen_ai.client.operation.duration",
        "gen_ai.client.operation.time_to_first_chunk", "tollgate.cost", "tollgate.savings",
        "tollgate.requests",
    }  # fmt: skip
    duration = metrics["gen_ai.client.operation.duration"].data.data_points
    assert (
        sum(p.count for p in duration) == 3
        and metrics["gen_ai.client.operation.duration"].unit == "s"
    )
    savings = metrics["tollgate.savings"].data.data_points
    assert [(dict(p.attributes)["tollgate.optimisation"], p.value) for p in savings] == [
        ("tier_routing", 0.00005)
    ]
    assert encode_metrics(data).ByteSize() > 0  # the OTLP exporter can send it

    class Adapter(Collector):
        def collect(self):  # type: ignore[no-untyped-def]
            return book.prometheus()

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Adapter())
    text = generate_latest(registry).decode()
    assert 'tollgate_requests_total{gen_ai_operation_name="chat"' in text
    assert 'tollgate_team="ml"' in text and 'tollgate_team="web"' in text
    line = next(
        s for s in text.splitlines()
        if s.startswith("gen_ai_client_operation_duration_seconds_bucket") and 'le="0.32"' in s
        and 'tollgate_team="ml"' in s
    )  # fmt: skip
    assert line.endswith(" 2.0")  # cumulative: both ml calls took 0.25 s
    assert "gen_ai_client_operation_time_to_first_chunk_seconds_count" in text


def test_rollup_rows_add_up_across_granularities() -> None:
    processor = RollupProcessor()
    for minute in (28_000_000, 28_000_001, 28_000_061):  # two in one hour, one in the next
        processor.add(_facts(minute))
    processor.add(_facts(28_000_000, outcome="denied"))
    spend_rows, latency_rows, _ = rows_of(processor.take())
    by = {(r["granularity"], r["bucket_start"]): r for r in spend_rows}
    hour = 28_000_000 * 60 // 3600 * 3600
    assert by[("hour", hour)]["requests"] == 3 and by[("hour", hour)]["denied"] == 1
    assert by[("hour", hour)]["cost_nanousd"] == 3 * 123_456
    assert sum(r["requests"] for r in spend_rows if r["granularity"] == "day") == 4
    assert sum(r["requests"] for r in spend_rows if r["granularity"] == "minute") == 4
    assert {r["key_name"] for r in spend_rows} == {"alice"}
    # Latency percentiles are of answered calls: the denied one is not among them.
    assert sum(r["count"] for r in latency_rows if r["granularity"] == "minute") == 3
    assert {r["bin"] for r in latency_rows} == {latency_bin(250.0)}


def test_pending_merge_keeps_everything() -> None:
    one, two = RollupProcessor(), RollupProcessor()
    one.add(_facts(5))
    two.add(_facts(5))
    two.add(_facts(6))
    merged = one.take()
    merged.merge(two.take())
    assert sum(sums[0] for sums in merged.spend.values()) == 3
    assert isinstance(merged, Pending) and len(SUMS) == len(next(iter(merged.spend.values())))


def test_range_buckets() -> None:
    r = Range.last(3600, now=7_200_030)
    assert r.granularity == "minute" and len(r.buckets()) == 60
    assert r.start == 7_196_460 and r.end == 7_200_060  # the current minute included
    assert Range.last(7 * 86400, 7_200_030).granularity == "hour"
    assert Range.last(30 * 86400, 7_200_030).granularity == "day"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{sample_ratio: 2}", "telemetry.sample_ratio: Input should be less than or equal to 1"),
        ("{otlp: {endpoint: collector:4318}}", "telemetry.otlp.endpoint: Value error, must start"),
        ("{otlp: {protocol: thrift}}", "telemetry.otlp.protocol: Input should be 'http/protobuf'"),
        ("{rollups: {flush_seconds: 0}}", "telemetry.rollups.flush_seconds: Input should be gr"),
        ("{tracing: true}", "telemetry.tracing: unknown key (not allowed here)"),
    ],
)
def test_telemetry_config_errors_name_the_key(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "tollgate.yaml"
    path.write_text(f"version: 1\ntelemetry: {text}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    (problem,) = [p for p in info.value.problems if ": telemetry." in p]
    assert expected in problem and ":2:" in problem, problem


def test_budget_exhaustion_projection() -> None:
    from gateway.api.spend_data import projected_exhaustion

    day = 86_400.0
    # A quarter of the day gone, 40% spent: 60% more at that rate takes 0.375 day.
    assert projected_exhaustion(4.0, 10.0, 0, day, day / 4) == pytest.approx(day * 0.625)
    assert projected_exhaustion(1.0, 10.0, 0, day, day / 2) is None  # lasts past the window
    assert projected_exhaustion(10.0, 10.0, 0, day, 100.0) == 100.0  # already spent
    assert projected_exhaustion(0.0, 10.0, 0, day, 100.0) is None


def test_dashboard_without_keys_answers_loopback_only() -> None:
    from types import SimpleNamespace

    from starlette.requests import Request

    from gateway.api.dashboard import check_dashboard
    from gateway.errors import AuthenticationFailed, PermissionDenied

    def request(host: str, auth: str = "") -> Request:
        headers = [(b"authorization", auth.encode())] if auth else []
        return Request({"type": "http", "client": (host, 5000), "headers": headers})

    config = SimpleNamespace(telemetry=SimpleNamespace(dashboard=SimpleNamespace(key_env="K")))
    runtime = SimpleNamespace(current=SimpleNamespace(config=config))
    open_ = SimpleNamespace(admin_key=None, dashboard_key=None, runtime=runtime)
    check_dashboard(request("127.0.0.1"), open_)  # type: ignore[arg-type]
    check_dashboard(request("::1"), open_)  # type: ignore[arg-type]
    with pytest.raises(PermissionDenied):
        check_dashboard(request("10.0.0.7"), open_)  # type: ignore[arg-type]
    keyed = SimpleNamespace(admin_key="admin", dashboard_key="dash", runtime=runtime)
    with pytest.raises(AuthenticationFailed):
        check_dashboard(request("127.0.0.1"), keyed)  # type: ignore[arg-type]
    check_dashboard(request("10.0.0.7", "Bearer dash"), keyed)  # type: ignore[arg-type]
    check_dashboard(request("10.0.0.7", "Bearer admin"), keyed)  # type: ignore[arg-type]


def test_a_long_outage_folds_minutes_into_hours_keeping_totals(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from gateway.telemetry import rollups

    monkeypatch.setattr(rollups, "MAX_PENDING", 10)
    processor = RollupProcessor()
    for minute in range(28_000_000, 28_000_030):  # 30 minute buckets, within one hour or two
        processor.add(_facts(minute))
    pending = processor.take()
    processor.restore(pending)  # as after a failed flush
    kept = processor.peek()
    assert len(kept.spend) <= 2 and sum(s[0] for s in kept.spend.values()) == 30
    spend_rows, _, _ = rows_of(kept)
    day = sum(r["cost_nanousd"] for r in spend_rows if r["granularity"] == "day")
    assert day == 30 * 123_456
    assert {r["key_name"] for r in spend_rows} == {"alice"}


def test_json_exporter_gives_up_within_its_timeout_and_counts() -> None:
    from opentelemetry.sdk.trace.export import SpanExportResult

    from gateway.telemetry.otlp_json import JsonSpanExporter
    from tests.support.servers import free_port

    exporter = JsonSpanExporter(f"http://127.0.0.1:{free_port()}", {}, timeout=0.2)
    assert exporter.export([_root(1)]) is SpanExportResult.FAILURE  # nothing listens there
    assert exporter.dropped == 1 and exporter.failures == 1
    exporter.shutdown()


def test_a_negative_saving_goes_to_its_own_counter_so_savings_never_decrease() -> None:
    book = MetricBook()
    book.add(_facts(1, savings=(("tier_routing", 50_000),)))
    book.add(_facts(1, savings=(("tier_routing", -20_000),)))  # served dearer
    data = book.metrics_data(Resource.create({"service.name": "t"}), InstrumentationScope("t"))
    metrics = {m.name: m for m in data.resource_metrics[0].scope_metrics[0].metrics}
    (saved,) = metrics["tollgate.savings"].data.data_points
    (over,) = metrics["tollgate.overspend"].data.data_points
    assert saved.value == 0.00005 and over.value == 0.00002
    assert metrics["tollgate.overspend"].data.is_monotonic


def test_a_model_name_a_client_made_up_is_one_label() -> None:
    from gateway.call import Call, CallRecord, Outcome
    from gateway.telemetry.facts import UNKNOWN_MODEL, model_label

    records = []
    for name in ("gpt-" + "x" * 50, "nope-1", "nope-2"):
        call = Call("r", "openai", "chat.completions", name, {}, False, False)
        records.append(CallRecord.of(call, Outcome(status=404, kind="rejected")))
    assert {model_label(r) for r in records} == {UNKNOWN_MODEL}
    served = CallRecord.of(
        Call("r", "openai", "chat.completions", "chat", {}, False, False), Outcome(status=200)
    )
    assert model_label(served) == "chat"


def test_latency_percentiles_describe_answered_calls_only() -> None:
    processor = RollupProcessor()
    processor.add(_facts(1))
    processor.add(_facts(1, outcome="denied"))
    processor.add(_facts(1, outcome="rejected"))
    latency = processor.take().latency
    assert sum(latency.values()) == 1  # the served call; refusals in 1 ms would drag it down
