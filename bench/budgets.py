"""What budgets and rate limits cost per call: two Tollgate gateways in one run, identical but
for `limits:` (Redis on loopback, a team budget, a key budget and a per-key rate limit that
every call checks and none reaches), measured alternately so machine noise hits both alike.

    python bench/budgets.py [--rounds 5] [--duration 8] [--out FILE]

Gateways on core 0 (one at a time under load), mocks and load generators on core 1. Reported:
medians over rounds of added latency at a fixed 200 req/s with a 50 ms upstream, and of max
req/s and CPU per request at concurrency 32 with a 0 ms upstream; the difference is the cost.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.run import (  # noqa: E402
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

LIMITS = """
limits:
  store: redis
  redis_url: {redis}
  key_prefix: {prefix}
  budgets:
    - {{name: team-month, scope: team, subject: "*", usd: 1000000, window: month}}
    - {{name: key-day, scope: key, subject: "*", tokens: 1000000000000, window: day}}
  rate_limits:
    - {{name: per-key, scope: key, subject: "*", rpm: 100000000, tpm: 100000000000}}
"""


def run(rounds: int, duration: int, redis_url: str) -> dict[str, Any]:
    os.sched_setaffinity(0, {1})
    work = Path(tempfile.mkdtemp(prefix="tollgate-bench-budgets-"))
    fast, slow = free_port(), free_port()
    plain_port, limited_port = free_port(), free_port()
    base = gateway_config(fast, slow)
    (work / "plain.yaml").write_text(base)
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    (work / "limited.yaml").write_text(base + LIMITS.format(redis=redis_url, prefix=prefix))
    py, mock = sys.executable, str(ROOT / "bench" / "mock_upstream.py")
    samples: dict[str, list[float]] = {}

    def gateway(name: str, port: int) -> Any:
        env = {"BENCH_KEY": KEY, "TOLLGATE_DATABASE_URL": f"sqlite:///{work}/{name}.db"}
        cmd = [py, "-m", "gateway", "serve", "--config", str(work / f"{name}.yaml")]
        return process(
            [*cmd, "--port", str(port)], 0, f"http://127.0.0.1:{port}", env, work / f"{name}.log"
        )

    with (
        process([py, mock, "--port", str(fast)], 1, f"http://127.0.0.1:{fast}"),
        process([py, mock, "--port", str(slow), "--delay-ms", "50"], 1, f"http://127.0.0.1:{slow}"),
        gateway("plain", plain_port) as plain,
        gateway("limited", limited_port) as limited,
    ):
        gateways = {"plain": (plain, plain_port), "limited": (limited, limited_port)}
        for _, port in gateways.values():
            wrk(f"http://127.0.0.1:{port}", BODY, 2)  # warm-up
        direct = f"http://127.0.0.1:{slow}"
        for r in range(rounds):
            order = ["plain", "limited"] if r % 2 == 0 else ["limited", "plain"]
            base_lat = asyncio.run(fixed_rate(direct, 200, duration, False))
            for name in order:
                proc, port = gateways[name]
                url = f"http://127.0.0.1:{port}"
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
    shutil.rmtree(work, ignore_errors=True)
    _drop_prefix(redis_url, prefix)
    medians = {k: statistics.median(v) for k, v in samples.items()}
    return {"rounds": rounds, "duration_s": duration, "median": medians, "samples": samples}


def _drop_prefix(redis_url: str, prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match="\\{" + prefix + "\\}:*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


def table(r: dict[str, Any]) -> str:
    m = r["median"]
    rows = [
        ("added p50 @200 req/s, 50 ms upstream (ms)", "added_p50_ms", 2),
        ("added p99 @200 req/s, 50 ms upstream (ms)", "added_p99_ms", 2),
        ("max req/s, c=32, 0 ms upstream", "rps", 0),
        ("gateway CPU per request (ms)", "cpu_ms", 3),
    ]
    lines = [
        "| measure (median of rounds) | no limits | budgets + rate limit (Redis) | difference |",
        "|---|---:|---:|---:|",
    ]
    for label, key, digits in rows:
        a, b = m[f"plain_{key}"], m[f"limited_{key}"]
        lines.append(f"| {label} | {a:,.{digits}f} | {b:,.{digits}f} | {b - a:+,.{digits}f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=int, default=8)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    results = run(args.rounds, args.duration, args.redis)
    print(table(results))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
