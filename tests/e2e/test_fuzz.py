"""Fuzzed requests on the five call endpoints, against a gateway with budgets and rate limits on
Redis and the audit log on: no 5xx, no crash, exactly one audit event per request, no
reservation left held, no stall of the event loop. Seeded and bounded; FUZZ_REQUESTS and
FUZZ_SEED run a longer campaign (docs/benchmarks.md reports one)."""

from __future__ import annotations

import os
import random
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import redis

from tests.support.audit import gateway_events
from tests.support.fuzz import ENDPOINTS, request
from tests.support.servers import GatewayProcess
from tests.support.services import REDIS_URL, redis_prefix
from tests.support.wait import until

KEY = "tg-fuzz"
CONFIG = """
version: 1
server: {{reload_poll_seconds: 0, max_body_bytes: 2000000}}
auth:
  keys: [{{name: fuzzer, key_env: TG_KEY, team: fuzz}}]
backends:
  sim:
    type: sim
    time_scale: 0
    models:
      - {{name: m, input_price_per_mtok: 1, output_price_per_mtok: 2}}
      - {{name: e, kind: embedding, input_price_per_mtok: 0.1}}
models:
  chat: {{backend: sim, model: m}}
  embed: {{backend: sim, model: e}}
policies:
  - use: audit_capture
    with: {{content: redacted}}
limits:
  store: redis
  key_prefix: "{prefix}"
  budgets: [{{name: fuzz, scope: team, subject: fuzz, usd: 1000, window: day}}]
  rate_limits: [{{name: fuzz-rpm, scope: key, subject: "*", rpm: 100000}}]
audit: {{ship_interval_ms: 20}}
"""


class Pinger(threading.Thread):
    """Measures how long /healthz takes while the fuzzing runs: a stalled event loop shows."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.worst = 0.0
        self.slow = 0
        self.stop = threading.Event()

    def run(self) -> None:
        with httpx.Client(timeout=30) as client:
            while not self.stop.wait(0.02):
                started = time.perf_counter()
                try:
                    client.get(self.url + "/healthz")
                except httpx.HTTPError:
                    return  # the gateway is gone: the test says why
                took = time.perf_counter() - started
                self.worst = max(self.worst, took)
                self.slow += took > 0.1


def test_fuzzed_requests_harm_no_one(tmp_path: Path) -> None:
    count = int(os.environ.get("FUZZ_REQUESTS", "300"))
    rng = random.Random(int(os.environ.get("FUZZ_SEED", "20261201")))
    with redis_prefix() as prefix:
        config = tmp_path / "tollgate.yaml"
        config.write_text(CONFIG.format(prefix=prefix))
        with GatewayProcess(config, env={"TG_KEY": KEY}, log=tmp_path / "gw.log") as gw:
            pinger = Pinger(gw.url)
            pinger.start()
            statuses: Counter[tuple[str, int]] = Counter()
            headers = {"authorization": f"Bearer {KEY}", "content-type": "application/json"}
            with httpx.Client(timeout=60) as client:
                for _ in range(count):
                    path, raw = request(rng)
                    r = client.post(gw.url + path, content=raw, headers=headers)
                    statuses[(path, r.status_code)] += 1
                    assert r.status_code < 500, (path, raw[:300], r.text[:500])
            pinger.stop.set()
            pinger.join(5)
            assert gw.proc is not None and gw.proc.poll() is None, "the gateway crashed"
            until(lambda: len(gateway_events(gw)) >= count, timeout=60)
            assert len(gateway_events(gw)) == count, "exactly one audit event per request"
            store = redis.Redis.from_url(REDIS_URL)
            until(lambda: store.zcard("{" + prefix + "}:holds") == 0, timeout=10)
            store.close()
            logs = gw.logs()
            assert "Traceback" not in logs and "unhandled" not in logs, logs[-3000:]
        per_endpoint = {p: sum(n for (q, _), n in statuses.items() if q == p) for p in ENDPOINTS}
        print(f"\nfuzz: {count} requests {per_endpoint}; statuses {dict(statuses)}; "
              f"healthz worst {pinger.worst * 1000:.0f} ms, {pinger.slow} over 100 ms")  # fmt: skip
        assert pinger.worst < 2.0, f"the event loop stalled {pinger.worst:.2f}s"
