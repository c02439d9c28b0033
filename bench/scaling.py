"""How throughput scales with `--workers` and with gateway processes behind a load balancer.

The fleet configuration throughout (budgets and a rate limit on Redis, audit and telemetry
rollups to one PostgreSQL database, as a fleet shares them), against a 0 ms mock upstream, with
a direct connection and the minimal proxy measured in the same run. For each variant: req/s at
wrk's c=64, the CPU the gateway processes used (every worker, and HAProxy's apart), and req/s
per busy gateway core, the per-core efficiency, against one worker's.

    python bench/scaling.py [--duration 10] [--out FILE]

Needs wrk and haproxy (Debian packages), Redis and PostgreSQL on their usual ports.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.run import BODY, FLEET, KEY, TICKS, drop_prefix, free_port, gateway_config, wrk
from tests.support.services import postgres_database

ROOT = Path(__file__).resolve().parent.parent


def tree_cpu_seconds(root: int) -> float:
    """CPU time of a process and every live descendant (uvicorn's workers are children)."""
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid = int(entry.name)
        parents[pid] = int(fields[1])
        times[pid] = (int(fields[11]) + int(fields[12])) / TICKS
    total, stack = 0.0, [root]
    while stack:
        pid = stack.pop()
        total += times.get(pid, 0.0)
        stack += [child for child, parent in parents.items() if parent == pid]
    return total


def wait_port(port: int, proc: subprocess.Popen[bytes], path: str = "/readyz") -> None:
    import httpx

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited with {proc.returncode}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"http://127.0.0.1:{port}{path}", timeout=1).status_code < 500:
                return
        time.sleep(0.1)
    raise RuntimeError(f"port {port} not ready")


@contextlib.contextmanager
def started(cmd: list[str], port: int, env: dict[str, str], log: Path, path: str = "/readyz"
            ) -> Iterator[subprocess.Popen[bytes]]:  # fmt: skip
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=out, env={**os.environ, **env})
        try:
            wait_port(port, proc, path)
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def haproxy_config(port: int, backends: list[int]) -> str:
    servers = "\n".join(f"  server gw{i} 127.0.0.1:{p}" for i, p in enumerate(backends))
    return f"""
global
  maxconn 4000
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  option http-keep-alive
frontend gateways
  bind 127.0.0.1:{port}
  default_backend tollgate
backend tollgate
  balance leastconn
{servers}
"""


def measure(url: str, duration: int, pids: list[int], lb: int | None = None) -> dict[str, Any]:
    before = [tree_cpu_seconds(p) for p in pids]
    lb_before = tree_cpu_seconds(lb) if lb else 0.0
    start = time.monotonic()
    result = wrk(url, BODY, duration, connections=64)
    wall = time.monotonic() - start
    busy = sum(tree_cpu_seconds(p) - b for p, b in zip(pids, before, strict=True)) / wall
    lb_busy = (tree_cpu_seconds(lb) - lb_before) / wall if lb else 0.0
    return {"rps": result["rps"], "gateway_cores": busy, "lb_cores": lb_busy,
            "rps_per_gateway_core": result["rps"] / busy if busy else float("nan")}  # fmt: skip


def run(duration: int, redis: str) -> dict[str, Any]:
    py = sys.executable
    work = Path(tempfile.mkdtemp(prefix="tollgate-scaling-"))
    mock_port, floor_port = free_port(), free_port()
    prefix = f"bench-scaling-{os.getpid()}"
    config = work / "fleet.yaml"
    fleet = FLEET.format(redis=redis, prefix=prefix)
    config.write_text(gateway_config(mock_port, mock_port) + fleet)
    results: dict[str, Any] = {"duration_s": duration, "cores": os.cpu_count()}
    with contextlib.ExitStack() as stack:
        url = stack.enter_context(postgres_database())  # a fresh database, dropped after
        env = {"BENCH_KEY": KEY, "TOLLGATE_DATABASE_URL": url, "TOLLGATE_SECRET": "bench"}
        subprocess.run([py, "-m", "gateway", "db", "upgrade", "--config", str(config)],
                       env={**os.environ, **env}, check=True, capture_output=True)  # fmt: skip
        mock = stack.enter_context(started(
            [py, str(ROOT / "bench" / "mock_upstream.py"), "--port", str(mock_port)], mock_port,
            {}, work / "mock.log", path="/v1/models"))  # fmt: skip
        del mock
        stack.enter_context(started(
            [py, str(ROOT / "bench" / "minimal_proxy.py"), "--port", str(floor_port),
             "--upstream", f"http://127.0.0.1:{mock_port}"], floor_port, {}, work / "floor.log",
            path="/"))  # fmt: skip
        results["direct_rps"] = wrk(f"http://127.0.0.1:{mock_port}", BODY, duration, 64)["rps"]
        results["floor_rps"] = wrk(f"http://127.0.0.1:{floor_port}", BODY, duration, 64)["rps"]
        for workers in (1, 2, 4):
            port = free_port()
            with started([py, "-m", "gateway", "serve", "--config", str(config), "--port",
                          str(port), "--workers", str(workers)], port,
                         {**env, "TOLLGATE_AUDIT_DIR": str(work / f"audit-w{workers}")},
                         work / f"workers-{workers}.log") as gw:  # fmt: skip
                wrk(f"http://127.0.0.1:{port}", BODY, 2, 64)  # warm-up
                results[f"workers_{workers}"] = measure(f"http://127.0.0.1:{port}", duration,
                                                        [gw.pid])  # fmt: skip
        for count in (2, 4):
            with contextlib.ExitStack() as fleet:
                ports = [free_port() for _ in range(count)]
                procs = [fleet.enter_context(started(
                    [py, "-m", "gateway", "serve", "--config", str(config), "--port", str(p)], p,
                    {**env, "TOLLGATE_AUDIT_DIR": str(work / f"audit-p{count}-{i}")},
                    work / f"fleet-{count}-{i}.log")) for i, p in enumerate(ports)]  # fmt: skip
                lb_port = free_port()
                (work / "haproxy.cfg").write_text(haproxy_config(lb_port, ports))
                lb = fleet.enter_context(started(
                    ["haproxy", "-f", str(work / "haproxy.cfg"), "-db"], lb_port, {},
                    work / "haproxy.log", path="/readyz"))  # fmt: skip
                lb_url = f"http://127.0.0.1:{lb_port}"
                wrk(lb_url, BODY, 2, 64)
                results[f"processes_{count}"] = measure(lb_url, duration,
                                                        [p.pid for p in procs], lb.pid)  # fmt: skip
    drop_prefix(redis, prefix)
    return results


def table(r: dict[str, Any]) -> str:
    base = r["workers_1"]["rps_per_gateway_core"]
    lines = [
        f"direct {r['direct_rps']:,.0f} req/s; minimal proxy {r['floor_rps']:,.0f} req/s "
        f"({r['cores']} cores, every process on them)",
        "",
        "| Tollgate (fleet config) | req/s | vs 1 worker | gateway cores busy | LB cores "
        "| req/s per gateway core | per-core efficiency |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    one = r["workers_1"]["rps"]
    for key, label in (("workers_1", "1 worker"), ("workers_2", "2 workers"),
                       ("workers_4", "4 workers"), ("processes_2", "2 processes + HAProxy"),
                       ("processes_4", "4 processes + HAProxy")):  # fmt: skip
        m = r[key]
        lines.append(
            f"| {label} | {m['rps']:,.0f} | {m['rps'] / one:.2f}x | {m['gateway_cores']:.2f} "
            f"| {m['lb_cores']:.2f} | {m['rps_per_gateway_core']:,.0f} "
            f"| {m['rps_per_gateway_core'] / base:.0%} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    results = run(args.duration, args.redis)
    print(table(results))
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
