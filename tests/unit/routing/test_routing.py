"""The routing layer's parts on their own: circuits, strategies, plans, engine load, the config
shape, and what resilience costs."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import pytest

from gateway.accounting.money import Costing
from gateway.accounting.pricing import Price, PriceRule, PriceTable
from gateway.backends.base import Capabilities, UpstreamRequest, UpstreamResponse
from gateway.call import AttemptRecord, Outcome, Route, Target, Usage
from gateway.config.backends_schema import HealthCheck
from gateway.config.loader import load_config
from gateway.errors import ConfigError, UpstreamUnavailable
from gateway.routing.router import Router
from gateway.routing.state import CircuitSettings, ReplicaState, ReplicaStates
from gateway.routing.strategies import (
    LeastOutstanding,
    RoundRobin,
    StrategyLoadError,
    Weighted,
    resolve,
)
from gateway.routing.table import AliasRoute, Replica, RetryPolicy, Tier
from gateway.routing.watch import Watched, Watcher, parse_load


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def state(clock: Clock, **circuit: float) -> ReplicaState:
    return ReplicaState("b", "m", "sig", CircuitSettings(**circuit), clock)  # type: ignore[arg-type]


# -- circuits ------------------------------------------------------------------------------


def test_failures_in_a_row_open_the_circuit_for_its_cooldown_then_one_probe() -> None:
    clock = Clock()
    s = state(clock, failures=3, cooldown_seconds=10)
    assert not s.failed() and not s.failed()
    assert s.failed() and s.circuit == "open" and not s.available()
    clock.now = 9.9
    assert not s.available()
    clock.now = 10.0
    assert s.available()
    s.enter()  # the half-open probe
    assert s.circuit == "half_open" and not s.available()  # only one probe at a time
    s.leave()
    s.succeeded(latency_ms=5)
    assert s.circuit == "closed" and s.available() and s.stats.circuit_opens == 1


def test_a_failed_probe_doubles_the_cooldown_up_to_its_ceiling() -> None:
    clock = Clock()
    s = state(clock, failures=1, cooldown_seconds=10, max_cooldown_seconds=25)
    s.failed()
    for expected in (20, 25, 25):
        clock.now = s.open_until
        s.enter()
        s.leave()
        s.failed()
        assert s.cooldown == expected
    assert s.stats.circuit_opens == 1  # one outage, however many failed probes


def test_an_error_rate_over_the_window_opens_the_circuit() -> None:
    s = state(Clock(), failures=100, error_rate=0.5, window=10, min_calls=10)
    for _ in range(5):
        s.succeeded()
        assert not s.failed() or s.circuit == "open"
    assert s.circuit == "open"  # 5 of the last 10


def test_an_upstream_retry_after_is_the_cooldown() -> None:
    clock = Clock()
    s = state(clock, failures=100, cooldown_seconds=10)
    assert s.failed(retry_after=3, rate_limited=True)
    assert s.seconds_closed() == 3 and s.rate_limited


def test_an_active_check_takes_out_and_brings_back_only_what_it_took_out() -> None:
    clock = Clock()
    s = state(clock, failures=1)
    assert s.checked(False, interval=5) and s.circuit == "open"
    clock.now = 9
    assert not s.available()  # held out until a check passes
    assert s.checked(True, interval=5) and s.circuit == "closed"
    s.failed()  # opened by calls: a passing health check does not override it
    assert not s.checked(True, interval=5) and s.circuit == "open"


def test_states_survive_a_rebuild_unless_their_backend_changed() -> None:
    states = ReplicaStates(Clock())
    a = states.get(("a", "m"), "v1", CircuitSettings())
    assert states.get(("a", "m"), "v1", CircuitSettings()) is a
    assert states.get(("a", "m"), "v2", CircuitSettings()) is not a
    states.retain(set())
    assert list(states) == []


# -- strategies ----------------------------------------------------------------------------


def replicas(n: int, weights: tuple[float, ...] | None = None) -> list[Replica]:
    return [Replica(f"r{i}", "m", "t", (weights or (1.0,) * n)[i]) for i in range(n)]


def test_least_outstanding_takes_the_less_loaded_of_two_and_the_rest_by_load() -> None:
    clock = Clock()
    states = [state(clock) for _ in range(3)]
    states[0].in_flight, states[1].in_flight, states[2].in_flight = 5, 0, 2
    rng = random.Random(1)
    firsts = Counter(
        next(iter(LeastOutstanding().order(replicas(3), states, rng))) for _ in range(300)
    )
    assert firsts[0] == 0  # the busiest never wins a draw of two
    order = list(LeastOutstanding().order(replicas(3), states, rng))
    assert sorted(order) == [0, 1, 2] and order[1:] == sorted(
        order[1:], key=lambda i: states[i].load
    )


def test_least_outstanding_reads_the_engines_own_load() -> None:
    from gateway.routing.state import EngineLoad

    clock = Clock()
    busy, idle = state(clock), state(clock)
    busy.engine = EngineLoad(running=30, waiting=10)
    firsts = {next(iter(LeastOutstanding().order(replicas(2), [busy, idle], random.Random(i))))
              for i in range(20)}  # fmt: skip
    assert firsts == {1}


def test_round_robin_and_weighted() -> None:
    clock = Clock()
    states = [state(clock) for _ in range(3)]
    rr = RoundRobin()
    assert [next(iter(rr.order(replicas(3), states, random.Random()))) for _ in range(4)] == [
        0, 1, 2, 0,
    ]  # fmt: skip
    rng = random.Random(7)
    picks = Counter(
        next(iter(Weighted().order(replicas(2, (3.0, 1.0)), states[:2], rng))) for _ in range(4000)
    )
    assert 2.5 < picks[0] / picks[1] < 3.5


def test_an_unknown_strategy_is_named_with_the_known_ones() -> None:
    assert resolve("round_robin") is RoundRobin
    with pytest.raises(
        StrategyLoadError, match="available: least_outstanding, prefix_aware, round_robin"
    ):
        resolve("fastest")


# -- plans ---------------------------------------------------------------------------------


def table() -> dict[str, AliasRoute]:
    def tier(alias: str, name: str, *backends: str) -> Tier:
        return Tier(name, tuple(Replica(b, "m", name) for b in backends), "round_robin")

    chat = AliasRoute(
        "chat",
        {"fp16": tier("chat", "fp16", "a", "b"), "int4": tier("chat", "int4", "c")},
        "fp16",
        "fp16",
        (("tier", "int4"), ("alias", "vendor")),
        RetryPolicy(),
    )
    vendor = AliasRoute(
        "vendor", {"default": tier("vendor", "default", "v")}, "default", "default", (),
        RetryPolicy(),
    )  # fmt: skip
    return {"chat": chat, "vendor": vendor}


def router(clock: Clock) -> Router:
    routes = table()
    states = {
        r.key: ReplicaState(r.backend, r.model, "s", CircuitSettings(failures=1), clock)
        for route in routes.values()
        for t in route.tiers.values()
        for r in t.replicas
    }
    strategies = {(a, t): RoundRobin() for a, r in routes.items() for t in r.tiers}
    return Router(routes, states, strategies, random.Random(0))


def test_a_plan_is_the_intended_tier_then_the_fallbacks_skipping_open_replicas() -> None:
    clock = Clock()
    r = router(clock)
    assert [a.replica.backend for a in r.plan("chat")] == ["a", "b", "c", "v"]
    assert [a.replica.backend for a in r.plan("chat", Route(tier="int4"))] == ["c", "v"]
    assert [a.replica.backend for a in r.plan("chat", Route(alias="vendor"))] == ["v"]
    next(s for s in r.replica_states() if s.backend == "b").failed()
    assert [a.replica.backend for a in r.plan("chat")] in (["a", "c", "v"],)
    assert {t.backend for t in r.reachable("chat")} == {"a", "b", "c", "v"}


# -- engine load ---------------------------------------------------------------------------

METRICS = """\
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{model_name="m",replica="0"} 3.0
vllm:num_requests_running{model_name="m",replica="1"} 2.0
vllm:num_requests_running{model_name="other",replica="0"} 9.0
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{model_name="m",replica="0"} 4.0
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{model_name="m",replica="0"} 0.5
"""


def test_engine_load_is_read_from_vllm_gauges_for_the_replicas_model() -> None:
    load = parse_load(METRICS, "m")
    assert load is not None
    assert (load.running, load.waiting, load.kv_cache_usage) == (5.0, 4.0, 0.5)
    assert parse_load("# nothing here\n", "m") is None


class FakeProbe:
    """A backend whose health endpoint answers what the test says."""

    name = "fake"
    total_timeout = 5.0
    capabilities = Capabilities("openai", True, True, True, False, False, True)

    def __init__(self) -> None:
        self.status: int | None = 200

    async def probe(self, path: str, wait: float) -> tuple[int, bytes]:
        if path == "/metrics":
            return 200, METRICS.encode()
        if self.status is None:
            raise UpstreamUnavailable("down", detail="refused")
        return self.status, b""

    async def send(self, request: UpstreamRequest) -> UpstreamResponse:
        raise AssertionError("not called")

    async def aclose(self) -> None:
        return None


async def test_the_watcher_checks_health_and_reads_load_off_the_request_path() -> None:
    import asyncio

    from gateway.config.backends_schema import LoadMetrics

    clock = Clock()
    s = state(clock)
    backend = FakeProbe()
    backend.status = 503
    watched = Watched(
        backend, HealthCheck(interval_seconds=0.01), LoadMetrics(interval_seconds=0.01), (s,)
    )  # type: ignore[arg-type]
    watcher = Watcher(lambda: [watched], tick=0.005)
    watcher.start()
    try:
        for _ in range(200):
            if s.circuit == "open" and s.engine is not None:
                break
            await asyncio.sleep(0.01)
        assert s.circuit == "open" and s.engine is not None and s.engine.running == 5.0
        backend.status = 200
        for _ in range(200):
            if s.circuit == "closed":
                break
            await asyncio.sleep(0.01)
        assert s.circuit == "closed"
    finally:
        await watcher.aclose()


async def test_a_watcher_with_nothing_to_watch_sleeps_until_told() -> None:
    watcher = Watcher(list, tick=0.001)
    watcher.start()
    await watcher.aclose()  # returns: it was waiting on its wake-up, not spinning


# -- the config shape ----------------------------------------------------------------------

BASE = """\
version: 1
auth: {mode: open}
backends:
  a: {type: sim, models: [{name: m}]}
models:
"""


@pytest.mark.parametrize(
    ("models", "expected"),
    [
        ("  chat: {targets: [{backend: a, model: m}]}\n",
         "models.chat.targets: Value error, `targets` was replaced by tiers"),
        ("  chat: {tiers: {x: [{backend: a, model: m}], y: [{backend: a, model: m}]}}\n",
         "models.chat: Value error, default_tier is required with several tiers (x, y)"),
        ("  chat: {backend: a, model: m, fallbacks: [nowhere]}\n",
         "models.chat.fallbacks[0]: 'nowhere' is neither a tier of this model (default) nor "
         "a model alias"),
        ("  chat: {backend: a, model: m, strategy: fastest}\n",
         "models.chat.strategy: unknown routing strategy 'fastest'"),
        ("  chat: {backend: a, model: m, reference: fp16}\n",
         "models.chat: Value error, 'fp16' is not a tier of this model"),
        ("  chat: {tiers: {x: [{backend: b, model: m}]}}\n",
         "models.chat.tiers.x[0].backend: unknown backend 'b'"),
        ("  chat: {backend: a, model: m, fallbacks: [chat]}\n",
         "models.chat.fallbacks[0]: an alias cannot fall back to itself"),
    ],
)  # fmt: skip
def test_routing_config_errors_say_where_and_what(
    tmp_path: Path, models: str, expected: str
) -> None:
    path = tmp_path / "tollgate.yaml"
    path.write_text(BASE + models)
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert any(expected in p for p in info.value.problems), info.value.problems


# -- what resilience costs -------------------------------------------------------------------


def test_tokens_failed_attempts_consumed_are_their_own_saving_line_and_money_adds_up() -> None:
    fp16, int4 = Target("gpu", "m", "fp16"), Target("gpu", "m-q", "int4")
    prices = PriceTable(
        [
            PriceRule("gpu", "m", Price.flat(4, 8, "t")),
            PriceRule("gpu", "m-q", Price.flat(1, 2, "t")),
        ],
        [fp16, int4],
    )
    costing = Costing(prices, {"chat": (fp16,)}, frozenset())
    timed_out = AttemptRecord(
        "gpu", "m", "fp16", 0, "upstream_timeout", 5.0, usage=Usage(100, estimated=True)
    )
    outcome = Outcome(status=200, target=int4, usage=Usage(100, 10), attempts=[timed_out])
    money = costing.money("chat", outcome)
    resilience = 100 * 4000
    assert money.saving("resilience") == -resilience
    assert money.cost == 100 * 1000 + 10 * 2000 + resilience
    assert sum(v for _, v in money.savings) == money.counterfactual - money.cost


def test_each_try_is_its_own_client_span_and_a_failed_one_says_why() -> None:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope
    from opentelemetry.trace import SpanKind, StatusCode

    from gateway.telemetry.context import TraceStarter
    from gateway.telemetry.spans import SpanBuilder
    from tests.support.telemetry import sample_record

    record = sample_record()
    served = record.attempts[0]
    failed = AttemptRecord("a", "m", "fp16", 503, "upstream_overloaded", 4.0, 0x99,
                           served.started_at - 0.01, detail="upstream HTTP 503: busy")  # fmt: skip
    record = record._replace(attempts=(failed, served))
    builder = SpanBuilder(Resource.create({}), InstrumentationScope("t"), lambda b: None,
                          TraceStarter())  # fmt: skip
    clients = [s for s in builder.spans(record) if s.kind is SpanKind.CLIENT]
    assert [s.context.span_id for s in clients] == [0x99, served.span_id]
    assert clients[0].status.status_code is StatusCode.ERROR
    assert clients[0].status.description == "upstream HTTP 503: busy"
    assert clients[0].attributes["tollgate.attempt"] == 1
    assert clients[1].status.status_code is StatusCode.UNSET
