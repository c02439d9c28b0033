"""Where telemetry's per-call cost goes, in-process and alternating (no servers): the work the
sink does per finished call (spans, rollups, metrics) with export off and with a full tree, and
what encoding the exported spans costs with the SDK's protobuf encoder and with http/json.

    python bench/telemetry_work.py [--calls 20000] [--rounds 5]

Figures are microseconds per call on the machine at hand, medians of alternating rounds; read
them against the gateway's CPU per request from bench/run.py or bench/telemetry.py.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def records(n: int) -> list:  # type: ignore[type-arg]
    from gateway.call import CallRecord, Decision, Money, Principal, ResponseMeta, Timings, Usage
    from gateway.telemetry.context import TraceStarter

    principal = Principal("k-bench", "bench", team="bench")
    starter = TraceStarter()
    out = []
    for i in range(n):
        t = time.time()
        out.append(
            CallRecord(
                f"req-{i}", "openai", "chat.completions", "fast", principal, t, t + 0.001,
                t + 0.002, 200, None, "fast", "bench", "fp16", Usage(12, 5), "miss", False,
                False, (Decision("max_tokens", "modify", "capped"),), "127.0.0.1", "wrk",
                money=Money(12_000, 14_000, (("tier_routing", 2_000),)),
                body={"model": "fast", "messages": [], "max_tokens": 10},
                meta=ResponseMeta("chatcmpl-bench", "bench", ("stop",)),
                trace=starter.start(None), timings=Timings((t, t + 1e-4), (), t + 2e-4),
            )
        )  # fmt: skip
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    from gateway.config.telemetry_schema import TelemetryConfig
    from gateway.telemetry.otlp_json import EncodedPairs
    from gateway.telemetry.otlp_json import encode as encode_json
    from gateway.telemetry.service import Telemetry
    from gateway.telemetry.spans import Peer

    peer = Peer("openai", "127.0.0.1", 9000)
    telemetry = Telemetry(TelemetryConfig(), peers=lambda _: peer, engine=None)
    calls = records(args.calls)
    trees = [telemetry.builder.spans(r, True) for r in calls[:2000]]
    spans = [s for tree in trees for s in tree]

    def sink_root_only() -> None:
        asyncio.run(telemetry.write(calls))

    def build_trees() -> None:
        for r in calls:
            telemetry.builder.spans(r, True)

    def protobuf() -> None:
        for i in range(0, len(spans), 512):
            encode_spans(spans[i : i + 512]).SerializeToString()

    pairs = EncodedPairs()

    def json() -> None:
        for i in range(0, len(spans), 512):
            encode_json(spans[i : i + 512], pairs)

    per_call = len(spans) / len(trees)
    cases: list[tuple[str, Callable[[], None], float]] = [
        ("sink per call: root span, rollups, metrics (export off or unsampled)", sink_root_only,
         len(calls)),
        ("building the full tree per call (sampled for export)", build_trees, len(calls)),
        ("OTLP http/protobuf encoding per call (SDK encoder)", protobuf, len(trees)),
        ("OTLP http/json encoding per call", json, len(trees)),
    ]  # fmt: skip
    samples: dict[str, list[float]] = {name: [] for name, _, _ in cases}
    for _ in range(args.rounds):
        for name, work, count in cases:
            started = time.perf_counter()
            work()
            samples[name].append((time.perf_counter() - started) / count * 1e6)
    print(f"| work (median of {args.rounds} rounds, {per_call:.1f} spans per call) | us per call |")
    print("|---|---:|")
    for name, values in samples.items():
        print(f"| {name} | {statistics.median(values):.1f} |")


if __name__ == "__main__":
    main()
