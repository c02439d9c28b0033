"""Gateway overhead benchmark: the gateway against a direct connection, measured in one run.

Layout on this 2-core machine: the gateway (one worker) pinned to core 0; the mock upstreams,
the load generators (wrk, and this script) on core 1. Every figure is reported next to the same
measurement taken directly against the mock, so the ratio is what matters, not absolute times.

    python bench/run.py [--duration 10] [--transport aiohttp|httpx] [--redis URL] [--out FILE]

Two Tollgate configurations are measured in the same run: today's default (in-process budget
counters, audit to SQLite) and what fleets run ("fleet": budgets and a rate limit on a Redis
store, every call checked against them, plus audit and telemetry rollups).

Needs `wrk` (Debian: apt-get install wrk) for the max-throughput runs, and Redis for the fleet
configuration.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp

from gateway.accounting.tokens import TokenCounter

ROOT = Path(__file__).resolve().parent.parent
KEY = "bench-key-0123456789"
BODY = {
    "model": "fast",
    "messages": [{"role": "user", "content": "Say something short."}],
    "max_tokens": 16,
}
TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])), 0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{url} not ready")


@contextmanager
def process(
    cmd: list[str], core: int, url: str, env: dict[str, str] | None = None, log: Path | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    out = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115
    proc = subprocess.Popen(
        ["taskset", "-c", str(core), *cmd],
        stdout=out,
        stderr=out,
        env={**os.environ, **(env or {})},
    )
    try:
        wait_ready(url, proc)
        yield proc
    finally:
        proc.terminate()
        proc.wait(15)
        if log:
            out.close()  # type: ignore[union-attr]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def wrk(
    url: str, body: dict[str, object], duration: int, connections: int = 32, unique: bool = False
) -> dict[str, float]:
    """`unique`: every request's body differs (a counter from a fresh random start in its last
    message: cache misses, in this run and against what earlier runs stored)."""
    script = f"""
wrk.method = "POST"
wrk.body = [[{json.dumps(body)}]]
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer {KEY}"
"""
    if unique:
        head, _, tail = json.dumps(body).rpartition('"}]')
        script += f"""
counter = {random.randrange(10**12) * 1000}
request = function()
  counter = counter + 1
  return wrk.format(nil, nil, nil, [[{head} ]] .. counter .. [["}}]{tail}]])
end
"""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(script)
    try:
        out = subprocess.run(
            [
                "taskset",
                "-c",
                "1",
                "wrk",
                "-t1",
                f"-c{connections}",
                f"-d{duration}s",
                "-s",
                f.name,
                url + "/v1/chat/completions",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    finally:
        os.unlink(f.name)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    if bad or errors:
        raise RuntimeError(f"wrk saw failures against {url}:\n{out}")
    return {"rps": rps, "requests": total}


async def fixed_rate(
    url: str, rate: float, seconds: float, stream: bool, body: dict[str, Any] | None = None
) -> list[float]:
    """Open-loop load: one request every 1/rate s; returns each one's latency (or TTFB) in ms.
    `body` defaults to BODY on the 50 ms upstream (the 0 ms one when streaming)."""
    latencies: list[float] = []
    failures: list[int] = []
    if body is None:
        body = {**BODY, "model": "slow" if not stream else "fast", "stream": stream}
    headers = {"authorization": f"Bearer {KEY}"}
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one() -> None:
            start = time.perf_counter()
            async with session.post(url + "/v1/chat/completions", json=body, headers=headers) as r:
                if r.status != 200:
                    await r.read()
                    failures.append(r.status)
                elif stream:
                    await r.content.readany()
                    latencies.append((time.perf_counter() - start) * 1000)
                    await r.read()
                else:
                    await r.read()
                    latencies.append((time.perf_counter() - start) * 1000)

        for _ in range(20):  # warm the pools
            await one()
        latencies.clear()
        failures.clear()
        tasks = []
        start = time.perf_counter()
        for i in range(int(rate * seconds)):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one()))
        await asyncio.gather(*tasks)
    # A rare failure (the minimal proxy's aiohttp client meeting a connection the mock just
    # closed answers 500) is reported, not fatal; more than 1 in 1000 is.
    if failures:
        print(
            f"{url}: {len(failures)} of {len(tasks)} calls failed: {failures[:5]}", file=sys.stderr
        )
        if len(failures) * 1000 > len(tasks):
            raise RuntimeError(f"{url}: too many failed calls ({len(failures)})")
    return latencies


def interleaved(targets: dict[str, str], duration: int, rounds: int = 4) -> dict[str, list[float]]:
    """Latency at 200 req/s for each target, measured in short alternating rounds (the order
    rotating each round) and pooled: the machine's drifts over a run then fall on every target
    alike instead of on whichever was measured last."""
    pooled: dict[str, list[float]] = {name: [] for name in targets}
    names = list(targets)
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            pooled[name] += asyncio.run(fixed_rate(targets[name], 200, duration / rounds, False))
    return pooled


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=1000)[int(q * 1000) - 1] if len(values) > 1 else values[0]


def gateway_config(fast_port: int, slow_port: int) -> str:
    return f"""
version: 1
server: {{reload_poll_seconds: 0}}
logging: {{json: true}}
auth:
  keys: [{{name: bench, key_env: BENCH_KEY, team: bench}}]
backends:
  fast: {{type: openai, base_url: "http://127.0.0.1:{fast_port}/v1"}}
  slow: {{type: openai, base_url: "http://127.0.0.1:{slow_port}/v1"}}
models:
  fast: {{backend: fast, model: bench}}
  slow: {{backend: slow, model: bench}}
pricing:
  - {{input: 1, output: 2}}
policies:
  - use: max_tokens
    with: {{limit: 4096}}
"""


# Shared counters in Redis, a team budget, a key budget and a per-key rate limit that every call
# checks and none reaches (bench/budgets.py measures them alone).
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
# What fleets run on top of the default: those limits, and the telemetry rollups.
FLEET = LIMITS + "telemetry: {{enabled: true}}\n"


def _gateway(py: str, config: Path, port: int, transport: str, work: Path, name: str) -> Any:
    return process(
        [py, "-m", "gateway", "serve", "--config", str(config), "--port", str(port),
         "--upstream-transport", transport],
        0,
        f"http://127.0.0.1:{port}",
        # A fresh database and audit journal per run: one left by an earlier run (its audit
        # rows, its rollups) would make runs depend on each other.
        env={
            "BENCH_KEY": KEY,
            "TOLLGATE_DATABASE_URL": f"sqlite:///{work}/{name}.db",
            "TOLLGATE_AUDIT_DIR": str(work / f"{name}-audit"),
            # The fleet configuration shares counters in Redis: a fleet member needs the secret.
            "TOLLGATE_SECRET": "bench",
        },
        log=work / f"{name}.log",
    )  # fmt: skip


def run(duration: int, transport: str, redis: str = "redis://127.0.0.1:6379/0") -> dict[str, Any]:
    if shutil.which("wrk") is None:
        sys.exit("wrk is required: apt-get install wrk")
    os.sched_setaffinity(0, {1})
    work = Path(tempfile.mkdtemp(prefix="tollgate-bench-"))
    fast, slow, gw = free_port(), free_port(), free_port()
    floor_fast, floor_slow = free_port(), free_port()
    minimal = str(ROOT / "bench" / "minimal_proxy.py")
    (work / "tollgate.yaml").write_text(gateway_config(fast, slow))
    prefix = f"bench-{os.getpid()}"
    fleet_yaml = gateway_config(fast, slow) + FLEET.format(redis=redis, prefix=prefix)
    (work / "fleet.yaml").write_text(fleet_yaml)
    fleet_port = free_port()
    py = sys.executable
    mock = str(ROOT / "bench" / "mock_upstream.py")
    results: dict[str, Any] = {"transport": transport, "duration_s": duration}
    # The gateway's RSS includes the tokenizer (~26 MB) only where its encoding loads, as it does
    # in production: say which case this run measured.
    results["tokenizer_exact"] = TokenCounter().exact
    with (
        process([py, mock, "--port", str(fast)], 1, f"http://127.0.0.1:{fast}"),
        process([py, mock, "--port", str(slow), "--delay-ms", "50"], 1, f"http://127.0.0.1:{slow}"),
        _gateway(py, work / "tollgate.yaml", gw, transport, work, "default") as gateway,
        _gateway(py, work / "fleet.yaml", fleet_port, transport, work, "fleet") as fleet,
        process(
            [py, minimal, "--port", str(floor_fast), "--upstream", f"http://127.0.0.1:{fast}"],
            0,
            f"http://127.0.0.1:{floor_fast}",
        ),
        process(
            [py, minimal, "--port", str(floor_slow), "--upstream", f"http://127.0.0.1:{slow}"],
            0,
            f"http://127.0.0.1:{floor_slow}",
        ),
    ):
        direct, via = f"http://127.0.0.1:{fast}", f"http://127.0.0.1:{gw}"
        via_fleet = f"http://127.0.0.1:{fleet_port}"
        wrk(via, BODY, 2)  # warm-up
        wrk(via_fleet, BODY, 2)
        results["direct_rps"] = wrk(direct, BODY, duration)["rps"]
        results["floor_rps"] = wrk(f"http://127.0.0.1:{floor_fast}", BODY, duration)["rps"]
        for tag, proc, url in (("gateway", gateway, via), ("fleet", fleet, via_fleet)):
            cpu0 = cpu_seconds(proc.pid)
            run_via = wrk(url, BODY, duration)
            cpu1 = cpu_seconds(proc.pid)
            results[f"{tag}_rps"] = run_via["rps"]
            results[f"{tag}_cpu_ms_per_request"] = (cpu1 - cpu0) * 1000 / run_via["requests"]
        stream_body = {**BODY, "stream": True}
        results["direct_stream_rps"] = wrk(direct, stream_body, duration)["rps"]
        results["gateway_stream_rps"] = wrk(via, stream_body, duration)["rps"]
        results["fleet_stream_rps"] = wrk(via_fleet, stream_body, duration)["rps"]
        latency = interleaved(
            {
                "direct": f"http://127.0.0.1:{slow}",
                "gateway": via,
                "fleet": via_fleet,
                "floor": f"http://127.0.0.1:{floor_slow}",
            },
            duration,
        )
        for q, name in ((0.5, "p50"), (0.99, "p99")):
            direct_q = pct(latency["direct"], q)
            results[f"direct_{name}_ms"] = direct_q
            results[f"gateway_{name}_ms"] = pct(latency["gateway"], q)
            results[f"added_{name}_ms"] = pct(latency["gateway"], q) - direct_q
            results[f"fleet_added_{name}_ms"] = pct(latency["fleet"], q) - direct_q
            results[f"floor_added_{name}_ms"] = pct(latency["floor"], q) - direct_q
        direct_ttfb = asyncio.run(fixed_rate(direct, 100, duration / 2, True))
        via_ttfb = asyncio.run(fixed_rate(via, 100, duration / 2, True))
        results["direct_ttfb_p50_ms"] = pct(direct_ttfb, 0.5)
        results["gateway_ttfb_p50_ms"] = pct(via_ttfb, 0.5)
        results["gateway_peak_rss_mb"] = peak_rss_mb(gateway.pid)
        results["fleet_peak_rss_mb"] = peak_rss_mb(fleet.pid)
    drop_prefix(redis, prefix)
    shutil.rmtree(work, ignore_errors=True)
    return results


def drop_prefix(redis_url: str, prefix: str) -> None:
    """Removes a run's Redis keys."""
    import redis

    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match="\\{" + prefix + "\\}:*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


def table(r: dict[str, Any]) -> str:
    """Markdown: direct, the minimal-proxy floor and Tollgate side by side."""

    def v(key: str, digits: int = 0) -> str:
        return f"{float(r[key]):,.{digits}f}" if key in r else ""

    def ratio(key: str, base: str) -> str:
        return f"{float(r[key]) / float(r[base]):.2f}x"

    rows = [
        ("max req/s, non-stream, c=32, 0 ms upstream", v("direct_rps"), v("floor_rps"),
         v("gateway_rps"), v("fleet_rps"), ratio("gateway_rps", "direct_rps"),
         ratio("fleet_rps", "direct_rps")),
        ("max req/s, stream 20 chunks, c=32", v("direct_stream_rps"), "",
         v("gateway_stream_rps"), v("fleet_stream_rps"),
         ratio("gateway_stream_rps", "direct_stream_rps"),
         ratio("fleet_stream_rps", "direct_stream_rps")),
        ("added p50 @200 req/s, 50 ms upstream (ms)", "0", v("floor_added_p50_ms", 2),
         v("added_p50_ms", 2), v("fleet_added_p50_ms", 2), "", ""),
        ("added p99 @200 req/s, 50 ms upstream (ms)", "0", v("floor_added_p99_ms", 2),
         v("added_p99_ms", 2), v("fleet_added_p99_ms", 2), "", ""),
        ("stream time to first byte p50 (ms)", v("direct_ttfb_p50_ms", 2), "",
         v("gateway_ttfb_p50_ms", 2), "", "", ""),
        ("gateway CPU per request (ms)", "", "", v("gateway_cpu_ms_per_request", 3),
         v("fleet_cpu_ms_per_request", 3), "", ""),
        ("gateway peak RSS (MB)", "", "", v("gateway_peak_rss_mb", 1),
         v("fleet_peak_rss_mb", 1), "", ""),
    ]  # fmt: skip
    lines = [
        "| measure | direct | minimal proxy | Tollgate | Tollgate, fleet config "
        "| Tollgate / direct | fleet / direct |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    if not r.get("tokenizer_exact", True):
        lines.append(
            "\nThe tiktoken encoding did not load (a damaged install?): the gateway ran on "
            "estimates and its RSS excludes the tokenizer's ~26 MB."
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--transport", choices=["aiohttp", "httpx"], default="aiohttp")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    results = run(args.duration, args.transport, args.redis)
    print(table(results))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
