"""What the response cache costs and saves over HTTP: three gateways and the 0 ms mock
upstream in one run, measured in alternating order (bench/ab.py's layout: gateways on core 0,
mocks and load on core 1).

    python bench/cache.py [--rounds 5] [--duration 8] [--out FILE]

    plain   no cache: every call passes through to the 0 ms upstream
    cached  the alias caches (exact, per team); the same request every time: exact hits
    miss    the same cache, every request different (a counter in it): a lookup that misses
            and a store, every call, into a namespace already holding --entries entries

Reported: latency at 200 req/s (direct to the mock, pass-through, hit), max req/s and CPU per
call at c=32 (pass-through vs hit; pass-through vs miss with unique bodies). Audit and
telemetry are on in all three, as fleets run them (the hit is recorded like any call).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.ab import run_cli
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
CACHED = "    cache: {nondeterministic: true, max_entries: 200000, max_entry_bytes: 65536}\n"
FAST = {**BODY, "model": "fast"}


def wrk_p50(
    url: str, body: dict[str, Any], duration: int, path: str = "/v1/chat/completions"
) -> float:
    """p50 latency in ms, one connection, one request at a time, from wrk (C): what a client
    with next to no overhead of its own sees."""
    script = Path(tempfile.mkstemp(suffix=".lua")[1])
    script.write_text(
        f'wrk.method = "POST"\nwrk.body = [[{json.dumps(body)}]]\n'
        f'wrk.headers["Content-Type"] = "application/json"\n'
        f'wrk.headers["Authorization"] = "Bearer {KEY}"\n'
    )
    try:
        out = subprocess.run(
            ["taskset", "-c", "1", "wrk", "-t1", "-c1", f"-d{duration}s", "--latency", "-s",
             str(script), url + path],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
    finally:
        script.unlink()
    found = re.search(r"50%\s+([\d.]+)(us|ms|s)\b", out)
    if found is None or "Non-2xx" in out:
        raise RuntimeError(f"wrk against {url}:\n{out}")
    value, unit = float(found.group(1)), found.group(2)
    return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value


def cached(config: str) -> str:
    return config.replace(
        "  fast: {backend: fast, model: bench}\n",
        "  fast:\n    backend: fast\n    model: bench\n" + CACHED,
    )


def run(args: Any) -> dict[str, Any]:
    os.sched_setaffinity(0, {1})
    work = Path(tempfile.mkdtemp(prefix="tollgate-bench-cache-"))
    fast, slow = free_port(), free_port()
    base = gateway_config(fast, slow) + "telemetry: {enabled: true}\n"
    py, mock = sys.executable, str(ROOT / "bench" / "mock_upstream.py")
    samples: dict[str, list[float]] = {}
    try:
        with contextlib.ExitStack() as stack:
            for port, delay in ((fast, 0), (slow, 50)):
                cmd = [py, mock, "--port", str(port), "--delay-ms", str(delay)]
                stack.enter_context(process(cmd, 1, f"http://127.0.0.1:{port}"))
            urls, procs = {}, {}
            for name, text in (("plain", base), ("cached", cached(base))):
                port = free_port()
                (work / f"{name}.yaml").write_text(text)
                env = {"BENCH_KEY": KEY, "TOLLGATE_DATABASE_URL": f"sqlite:///{work}/{name}.db",
                       "TOLLGATE_AUDIT_DIR": str(work / f"{name}-audit")}  # fmt: skip
                cmd = [py, "-m", "gateway", "serve", "--config", str(work / f"{name}.yaml"),
                       "--port", str(port)]  # fmt: skip
                url = f"http://127.0.0.1:{port}"
                procs[name] = stack.enter_context(process(cmd, 0, url, env, work / f"{name}.log"))
                urls[name] = url
            fill = 0
            while fill < args.entries:  # the namespace the misses land in, filled first
                fill += int(wrk(urls["cached"], FAST, 5, unique=True)["requests"])
            wrk(urls["plain"], FAST, 2)
            direct = f"http://127.0.0.1:{fast}"
            for r in range(args.rounds):
                lat = {
                    name: asyncio.run(fixed_rate(url, 200, args.duration, False, FAST))
                    for name, url in (("direct", direct), *urls.items())[:: 1 if r % 2 else -1]
                }
                for name, values in lat.items():
                    samples.setdefault(f"{name}_p50_ms", []).append(pct(values, 0.5))
                    samples.setdefault(f"{name}_p99_ms", []).append(pct(values, 0.99))
                for name, url in (("direct", direct), *urls.items()):
                    p50 = wrk_p50(url, FAST, max(2, args.duration // 2))
                    samples.setdefault(f"{name}_c1_p50_ms", []).append(p50)
                for name, unique in (("plain", False), ("cached", False), ("miss", True)):
                    proc = procs["plain" if name == "plain" else "cached"]
                    cpu0 = cpu_seconds(proc.pid)
                    got = wrk(urls["plain" if name == "plain" else "cached"], FAST, args.duration,
                              unique=unique)  # fmt: skip
                    cpu1 = cpu_seconds(proc.pid)
                    samples.setdefault(f"{name}_rps", []).append(got["rps"])
                    samples.setdefault(f"{name}_cpu_ms", []).append(
                        (cpu1 - cpu0) * 1000 / got["requests"]
                    )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    median = {k: statistics.median(v) for k, v in samples.items()}
    print(table(median, args.rounds))
    return {"rounds": args.rounds, "duration_s": args.duration, "median": median,
            "samples": samples}  # fmt: skip


def table(m: dict[str, float], rounds: int) -> str:
    hit_speedup = m["plain_c1_p50_ms"] / m["cached_c1_p50_ms"]
    return "\n".join([
        f"| measure (median of {rounds} rounds) | direct | pass-through | exact hit | miss |",
        "|---|---:|---:|---:|---:|",
        f"| p50 latency @200 req/s, 0 ms upstream (ms) | {m['direct_p50_ms']:.3f} | "
        f"{m['plain_p50_ms']:.3f} | {m['cached_p50_ms']:.3f} | |",
        f"| p99 latency @200 req/s (ms) | {m['direct_p99_ms']:.3f} | {m['plain_p99_ms']:.3f} | "
        f"{m['cached_p99_ms']:.3f} | |",
        f"| p50 latency, one connection, wrk (ms) | {m['direct_c1_p50_ms']:.3f} | "
        f"{m['plain_c1_p50_ms']:.3f} | {m['cached_c1_p50_ms']:.3f} | |",
        f"| max req/s, c=32 | | {m['plain_rps']:,.0f} | {m['cached_rps']:,.0f} | "
        f"{m['miss_rps']:,.0f} |",
        f"| gateway CPU per call (ms) | | {m['plain_cpu_ms']:.3f} | {m['cached_cpu_ms']:.3f} | "
        f"{m['miss_cpu_ms']:.3f} |",
        f"| hit vs pass-through: p50 latency (wrk, c=1) {hit_speedup:.1f}x faster, "
        f"throughput {m['cached_rps'] / m['plain_rps']:.1f}x; miss adds "
        f"{m['miss_cpu_ms'] - m['plain_cpu_ms']:+.3f} ms CPU per call | | | | |",
    ])  # fmt: skip


if __name__ == "__main__":
    run_cli(
        __doc__ or "",
        run,
        lambda p: p.add_argument("--entries", type=int, default=100_000),
    )
