"""Two or more Tollgate gateways in one run, identical but for one feature, measured in
alternating order so machine noise hits each alike. Used by budgets.py and audit.py.

Gateways on core 0 (one at a time under load), mocks and load generators on core 1. Each round
measures added latency at a fixed 200 req/s with a 50 ms upstream (against a direct connection
measured in the same round), then max req/s and CPU per request at concurrency 32 with a 0 ms
upstream. Medians over rounds are reported.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.run import (
    BODY,
    KEY,
    cpu_seconds,
    fixed_rate,
    free_port,
    gateway_config,
    pct,
    process,
    wrk,
)

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Variant:
    name: str
    extra_yaml: str = ""
    env: dict[str, str] = field(default_factory=dict)
    # Rewrites the base config (backends and models) before extra_yaml is appended.
    transform: Callable[[str], str] | None = None


def compare(
    work: Path, variants: list[Variant], rounds: int, duration: int, latency: bool = True
) -> dict[str, Any]:
    os.sched_setaffinity(0, {1})
    fast, slow = free_port(), free_port()
    base = gateway_config(fast, slow)
    py, mock = sys.executable, str(ROOT / "bench" / "mock_upstream.py")
    samples: dict[str, list[float]] = {}
    with contextlib.ExitStack() as stack:
        stack.enter_context(process([py, mock, "--port", str(fast)], 1, f"http://127.0.0.1:{fast}"))
        stack.enter_context(
            process(
                [py, mock, "--port", str(slow), "--delay-ms", "50"], 1, f"http://127.0.0.1:{slow}"
            )
        )
        gateways = {}
        for v in variants:
            port = free_port()
            text = v.transform(base) if v.transform is not None else base
            (work / f"{v.name}.yaml").write_text(text + v.extra_yaml)
            env = {"BENCH_KEY": KEY, "TOLLGATE_DATABASE_URL": f"sqlite:///{work}/{v.name}.db",
                   "TOLLGATE_AUDIT_DIR": str(work / f"{v.name}-audit"),
                   "TOLLGATE_SECRET": "bench", **v.env}  # fmt: skip
            cmd = [py, "-m", "gateway", "serve", "--config", str(work / f"{v.name}.yaml")]
            proc = stack.enter_context(
                process(
                    [*cmd, "--port", str(port)],
                    0,
                    f"http://127.0.0.1:{port}",
                    env,
                    work / f"{v.name}.log",
                )
            )
            gateways[v.name] = (proc, f"http://127.0.0.1:{port}")
            wrk(gateways[v.name][1], BODY, 2)  # warm-up
        direct = f"http://127.0.0.1:{slow}"
        for r in range(rounds):
            order = [v.name for v in variants]
            if r % 2:
                order.reverse()
            base_lat = asyncio.run(fixed_rate(direct, 200, duration, False)) if latency else []
            for name in order:
                proc, url = gateways[name]
                if latency:
                    lat = asyncio.run(fixed_rate(url, 200, duration, False))
                    for q, tag in ((0.5, "p50"), (0.99, "p99")):
                        added = pct(lat, q) - pct(base_lat, q)
                        samples.setdefault(f"{name}_added_{tag}_ms", []).append(added)
                cpu0 = cpu_seconds(proc.pid)
                result = wrk(url, BODY, duration)
                cpu1 = cpu_seconds(proc.pid)
                samples.setdefault(f"{name}_rps", []).append(result["rps"])
                cpu_ms = (cpu1 - cpu0) * 1000 / result["requests"]
                samples.setdefault(f"{name}_cpu_ms", []).append(cpu_ms)
    medians = {k: statistics.median(v) for k, v in samples.items()}
    return {"rounds": rounds, "duration_s": duration, "median": medians, "samples": samples}


ROWS = [
    ("added p50 @200 req/s, 50 ms upstream (ms)", "added_p50_ms", 2),
    ("added p99 @200 req/s, 50 ms upstream (ms)", "added_p99_ms", 2),
    ("max req/s, c=32, 0 ms upstream", "rps", 0),
    ("gateway CPU per request (ms)", "cpu_ms", 3),
]


def table(result: dict[str, Any], a: str, b: str, labels: tuple[str, str]) -> str:
    m = result["median"]
    lines = [
        f"| measure (median of {result['rounds']} rounds) | {labels[0]} | {labels[1]} "
        "| difference |",
        "|---|---:|---:|---:|",
    ]
    for label, key, digits in ROWS:
        if f"{a}_{key}" not in m:
            continue
        x, y = m[f"{a}_{key}"], m[f"{b}_{key}"]
        ratio = f" ({(y - x) / x:+.1%})" if key == "rps" else ""
        lines.append(
            f"| {label} | {x:,.{digits}f} | {y:,.{digits}f} | {y - x:+,.{digits}f}{ratio} |"
        )
    pairs = list(zip(result["samples"][f"{a}_rps"], result["samples"][f"{b}_rps"], strict=True))
    if pairs:
        # The same round's two measurements are seconds apart: their ratio resists the
        # machine's slow drifts better than a ratio of medians.
        ratios = sorted(y / x - 1 for x, y in pairs)
        lines.append(
            f"| max req/s, median of per-round differences | | | {statistics.median(ratios):+.1%}"
            f" (rounds: {ratios[0]:+.0%} .. {ratios[-1]:+.0%}) |"
        )
    return "\n".join(lines)


def run_cli(doc: str, body: Callable[[Any], dict[str, Any]], add: Callable[[Any], None]) -> Any:
    import argparse
    import json

    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=int, default=8)
    parser.add_argument("--out", type=Path, default=None)
    add(parser)
    args = parser.parse_args()
    results = body(args)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2))
    return results
