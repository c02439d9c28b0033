"""How many short requests one `tollgate sim` process answers per second at time_scale 0.

The simulator stands behind the gateway in benchmarks, so it must never be the bottleneck.
    python bench/sim_throughput.py [--duration 10]     (needs wrk: apt-get install wrk)
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile

from bench.run import free_port, process

BODY = (
    '{"model":"llama-3.1-8b-instruct-int4","max_tokens":8,'
    '"messages":[{"role":"user","content":"Say something short."}]}'
)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=int, default=10)
    args = parser.parse_args()
    port = free_port()
    script = (
        f'wrk.method = "POST"\nwrk.body = [[{BODY}]]\n'
        'wrk.headers["Content-Type"] = "application/json"\n'
    )
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(script)
    cmd = [sys.executable, "-m", "gateway", "sim", "--port", str(port), "--time-scale", "0"]
    try:
        with process(cmd, 0, f"http://127.0.0.1:{port}"):
            url = f"http://127.0.0.1:{port}/v1/chat/completions"
            subprocess.run(
                ["taskset", "-c", "1", "wrk", "-t1", "-c32", "-d2s", "-s", f.name, url],
                capture_output=True,
                check=True,
            )
            out = subprocess.run(
                [
                    "taskset",
                    "-c",
                    "1",
                    "wrk",
                    "-t1",
                    "-c32",
                    f"-d{args.duration}s",
                    "-s",
                    f.name,
                    url,
                ],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
    finally:
        os.unlink(f.name)
    if "Non-2xx" in out:
        sys.exit(f"errors during the run:\n{out}")
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    print(
        f"tollgate sim, one process on one core, time_scale 0, 8-token chat requests, "
        f"c=32: {float(rps.group(1)) if rps else float('nan'):,.0f} requests/s"
    )


if __name__ == "__main__":
    main()
