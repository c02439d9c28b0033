"""Does batch work move live latency? (#18: local batch work must not raise live calls' p50 by
more than 10% in the same run, and must finish when capacity frees.)

One gateway (core 0) in front of the simulator served over HTTP (core 1: 8 slots, decode
10 ms a token, decoding slows as more requests share a replica, as a real engine's does). Live
load: a fixed rate of 10-token chat calls. Each round measures the live p50 twice, in
alternating order: alone, and while a batch job of short lines is submitted to the same alias;
then how long the job takes to finish once the live load stops. Medians over rounds.

    python bench/batch.py [--rounds 3] [--seconds 15] [--rate 20] [--lines 400]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.run import KEY, fixed_rate, free_port, pct, process  # noqa: E402

SIM = """
time_scale: 1
models:
  - {name: m, slots: 8, decode_ms_per_token: 10, prefill_ms_per_token: 0.05,
     decode_batch_penalty: 0.04}
"""
GATEWAY = """
version: 1
server: {{reload_poll_seconds: 0}}
logging: {{requests: false}}
auth:
  keys: [{{name: bench, key_env: BENCH_KEY, team: bench}}]
backends:
  engine: {{type: openai, base_url: "http://127.0.0.1:{port}/v1"}}
models:
  chat: {{backend: engine, model: m}}
pricing: [{{free: true}}]
audit: {{enabled: false}}
batch: {{poll_seconds: 0.5, concurrency: 8, spare_below: {spare}}}
"""
BODY = {"model": "chat", "messages": [{"role": "user", "content": "live"}], "max_tokens": 10}


def submit(url: str, lines: int) -> str:
    rows = [{"custom_id": f"b{i}", "method": "POST", "url": "/v1/chat/completions",
             "body": {"model": "chat", "max_tokens": 10,
                      "messages": [{"role": "user", "content": f"batch {i}"}]}}
            for i in range(lines)]  # fmt: skip
    headers = {"authorization": f"Bearer {KEY}"}
    content = "\n".join(json.dumps(r) for r in rows).encode()
    with httpx.Client(base_url=url, headers=headers, timeout=30) as client:
        uploaded = client.post("/v1/files", files={"file": ("in.jsonl", content)},
                               data={"purpose": "batch"}).json()  # fmt: skip
        job = client.post("/v1/batches", json={"input_file_id": uploaded["id"],
                                               "endpoint": "/v1/chat/completions",
                                               "completion_window": "24h"}).json()  # fmt: skip
    return str(job["id"])


def status(url: str, ident: str) -> dict[str, Any]:
    headers = {"authorization": f"Bearer {KEY}"}
    return dict(httpx.get(f"{url}/v1/batches/{ident}", headers=headers, timeout=30).json())


def one_round(
    url: str, seconds: float, rate: float, lines: int, batch_first: bool
) -> dict[str, float]:
    out: dict[str, float] = {}
    for with_batch in (batch_first, not batch_first):
        ident = submit(url, lines) if with_batch else None
        latencies = asyncio.run(fixed_rate(url, rate, seconds, False, BODY))
        key = "p50_with_batch_ms" if with_batch else "p50_alone_ms"
        out[key] = pct(latencies, 0.5)
        if ident is not None:
            during = status(url, ident)["request_counts"]["completed"]
            out["lines_done_during_live"] = during
            start = time.monotonic()
            while (job := status(url, ident))["status"] != "completed":
                time.sleep(0.05)
            out["finish_after_live_s"] = time.monotonic() - start
            out["lines_done"] = job["request_counts"]["completed"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--rate", type=float, default=20)
    parser.add_argument("--lines", type=int, default=400)
    parser.add_argument("--spare", type=int, default=2, help="batch.spare_below (as configured)")
    args = parser.parse_args()
    os.sched_setaffinity(0, {1})  # the load beside the simulator; the gateway alone on core 0
    work = Path(tempfile.mkdtemp(prefix="tollgate-bench-batch-"))
    sim_port, gw_port = free_port(), free_port()
    (work / "sim.yaml").write_text(SIM)
    (work / "gw.yaml").write_text(GATEWAY.format(port=sim_port, spare=args.spare))
    py = sys.executable
    results: list[dict[str, float]] = []
    env = {"BENCH_KEY": KEY, "TOLLGATE_DATABASE_URL": f"sqlite:///{work}/gw.db"}
    sim_cmd = [py, "-m", "gateway", "sim", "--config", str(work / "sim.yaml"), "--port",
               str(sim_port)]  # fmt: skip
    gw_cmd = [py, "-m", "gateway", "serve", "--config", str(work / "gw.yaml"), "--port",
              str(gw_port)]  # fmt: skip
    with (
        process(sim_cmd, 1, f"http://127.0.0.1:{sim_port}", log=work / "sim.log"),
        process(gw_cmd, 0, f"http://127.0.0.1:{gw_port}", env, work / "gw.log"),
    ):
        url = f"http://127.0.0.1:{gw_port}"
        for r in range(args.rounds):
            results.append(one_round(url, args.seconds, args.rate, args.lines, r % 2 == 0))
            print(json.dumps(results[-1]), file=sys.stderr)
    medians = {k: statistics.median(r[k] for r in results) for k in results[0]}
    alone, busy = medians["p50_alone_ms"], medians["p50_with_batch_ms"]
    print(f"| measure (median of {args.rounds} rounds, {args.rate:g} live req/s, "
          f"{args.lines} batch lines) | value |")  # fmt: skip
    print("|---|---:|")
    print(f"| live p50 alone (ms) | {alone:.1f} |")
    print(f"| live p50 with a batch job submitted (ms) | {busy:.1f} ({busy / alone - 1:+.1%}) |")
    print(f"| batch lines done while the live load ran | {medians['lines_done_during_live']:.0f} |")
    print(f"| batch finished after the live load stopped (s) | "
          f"{medians['finish_after_live_s']:.1f} |")  # fmt: skip


if __name__ == "__main__":
    main()
