"""How many short requests one `tollgate sim` process answers per second at time_scale 0.

The simulator stands behind the gateway in benchmarks, so it must never be the bottleneck.
    python -m bench.sim_throughput [--duration 10]     (needs wrk: apt-get install wrk)
"""

from __future__ import annotations

import argparse
import sys

from bench.run import free_port, process, wrk

BODY = {
    "model": "llama-3.1-8b-instruct-int4",
    "max_tokens": 8,
    "messages": [{"role": "user", "content": "Say something short."}],
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=int, default=10)
    args = parser.parse_args()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "gateway", "sim", "--port", str(port), "--time-scale", "0"]
    with process(cmd, 0, url):
        wrk(url, BODY, 2)  # warm-up
        rps = wrk(url, BODY, args.duration)["rps"]
    print(
        "tollgate sim, one process on one core, time_scale 0, 8-token chat requests, "
        f"c=32: {rps:,.0f} requests/s"
    )


if __name__ == "__main__":
    main()
