"""A fleet as it runs in production, on one machine: HAProxy (Debian's, installed by .ci/run) in
front of three gateway processes sharing PostgreSQL (keys, audit) and Redis (budget counters),
each with its own audit journal, serving the simulator. Under steady load one gateway is killed
with SIGKILL and later restarted on the same journal:

- clients see failures only for calls that were in flight on it (started before the kill);
- every call any client got an answer for is in the audit table exactly once, and `tollgate
  audit verify` passes;
- a key's hard budget is not overshot by more than one call;
- a revoked key is refused by every gateway within the key refresh interval.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import httpx
from sqlalchemy import func, select

from gateway.audit import tables
from gateway.stores.sql import make_engine
from tests.support.load import prompt_hash, prompt_of
from tests.support.servers import FLEET_SECRET, GatewayProcess, free_port
from tests.support.services import postgres_database, redis_prefix
from tests.support.wait import polled, until

REFRESH_S = 0.25
BUDGET_USD = Decimal("0.30")
CONFIG = """
version: 1
server: {{reload_poll_seconds: 0}}
logging: {{requests: false}}
keys: {{refresh_seconds: {refresh}}}
limits:
  store: redis
  redis_url: redis://127.0.0.1:6379/0
  key_prefix: {prefix}
  budgets:
    - {{name: capped-monthly, scope: key, subject: capped, usd: "{budget}", window: month}}
backends:
  gpu:
    type: sim
    time_scale: 1
    models:
      - {{name: m, default_max_tokens: 4, prefill_ms_per_token: 1, decode_ms_per_token: 15,
         input_price_per_mtok: 1000, output_price_per_mtok: 2000}}
models:
  chat: {{backend: gpu, model: m}}
audit: {{ship_interval_ms: 20}}
"""


@dataclass
class Outcome:
    n: int
    key: str
    started: float
    finished: float
    status: int | None  # None: no HTTP answer at all (connection broken)


class FleetLoad:
    """Closed-loop clients through the load balancer, each call remembered with its timing."""

    def __init__(self, url: str, keys: list[tuple[str, str]]) -> None:
        self._url = url
        self._lock = threading.Lock()
        self._next = 0
        self.outcomes: list[Outcome] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._work, args=k, daemon=True) for k in keys]

    def __enter__(self) -> FleetLoad:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)

    def answered(self) -> int:
        with self._lock:
            return sum(o.status is not None and o.status < 500 for o in self.outcomes)

    def _work(self, name: str, secret: str) -> None:
        headers = {"authorization": f"Bearer {secret}"}
        with httpx.Client(timeout=10, headers=headers) as client:
            while not self._stop.is_set():
                with self._lock:
                    n, self._next = self._next, self._next + 1
                body = {"model": "chat", "messages": prompt_of(n), "max_tokens": 4}
                started = time.monotonic()
                try:
                    status: int | None = client.post(
                        self._url + "/v1/chat/completions", json=body
                    ).status_code
                except httpx.HTTPError:
                    status = None
                with self._lock:
                    self.outcomes.append(Outcome(n, name, started, time.monotonic(), status))


@contextlib.contextmanager
def haproxy(ports: list[int], tmp: Path) -> Iterator[str]:
    """HAProxy as deploy/compose/haproxy.cfg runs it, with the test's gateways as servers."""
    binary = shutil.which("haproxy")
    assert binary is not None, "haproxy is needed (Debian's package; .ci/run installs it)"
    port = free_port()
    servers = "\n".join(f"  server gw{i} 127.0.0.1:{p}" for i, p in enumerate(ports))
    config = tmp / "haproxy.cfg"
    config.write_text(f"""
defaults
  mode http
  timeout connect 2s
  timeout client 30s
  timeout server 30s
  option redispatch
  retries 3
  retry-on conn-failure
frontend gateways
  bind 127.0.0.1:{port}
  default_backend tollgate
backend tollgate
  balance roundrobin
  option httpchk GET /readyz
  http-check expect status 200
  default-server check inter 100ms fall 1 rise 2
{servers}
""")
    proc = subprocess.Popen([binary, "-f", str(config), "-db"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        until(lambda: _answers(url + "/healthz"), timeout=15)
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
        assert proc.stderr is not None
        proc.stderr.close()


def _answers(url: str) -> bool:
    with contextlib.suppress(httpx.HTTPError):
        return httpx.get(url, timeout=1).status_code == 200
    return False


def tollgate(config: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "gateway", *args, "--config", str(config)]
    return subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=120, check=False
    )


def test_killing_a_gateway_under_load_loses_nothing_and_overspends_nothing(
    tmp_path: Path,
) -> None:
    with postgres_database() as url, redis_prefix() as prefix:
        config = tmp_path / "tollgate.yaml"
        config.write_text(CONFIG.format(refresh=REFRESH_S, prefix=prefix, budget=BUDGET_USD))
        env = {**os.environ, "TOLLGATE_SECRET": FLEET_SECRET, "TOLLGATE_DATABASE_URL": url}
        assert tollgate(config, env, "db", "upgrade").returncode == 0
        secrets = {}
        for name in ("steady", "capped", "victim"):
            made = tollgate(config, env, "keys", "create", "--name", name)
            assert made.returncode == 0, made.stderr
            secrets[name] = made.stdout.split()[0]
        gateways = []
        for i in range(3):
            journal = str(tmp_path / f"journal-{i}")  # each its own, kept across its restart
            own = {"TOLLGATE_DATABASE_URL": url, "TOLLGATE_AUDIT_DIR": journal}
            gateways.append(GatewayProcess(config, env=own, log=tmp_path / f"gw{i}.log"))
        with contextlib.ExitStack() as stack:
            for gw in gateways:
                stack.enter_context(gw)
            lb = stack.enter_context(haproxy([gw.port for gw in gateways], tmp_path))
            clients = [("steady", secrets["steady"])] * 6 + [("capped", secrets["capped"])] * 2
            with FleetLoad(lb, clients) as load:
                until(lambda: load.answered() >= 120, timeout=60)
                victim = gateways[1]
                assert victim.proc is not None
                victim.proc.send_signal(signal.SIGKILL)  # no shutdown, no drain
                victim.proc.wait(10)
                dead_at = time.monotonic()  # a call sent before this may have reached it
                before = load.answered()
                until(lambda: load.answered() >= before + 120, timeout=60)
                victim.start()  # the same port and the same journal, as a restarted pod
                before = load.answered()
                until(lambda: load.answered() >= before + 120, timeout=60)
            for gw in gateways:
                until(lambda gw=gw: _drained(gw), timeout=30)
            check_outcomes(load.outcomes, dead_at)
            check_audit(url, load.outcomes)
            verified = tollgate(config, env, "audit", "verify")
            assert verified.returncode == 0, verified.stdout + verified.stderr
            check_revocation(config, env, secrets["victim"], gateways)


def _drained(gw: GatewayProcess) -> bool:
    audit = httpx.get(gw.url + "/readyz", timeout=5).json()["audit"]
    return bool(audit["lag_events"] == 0 and audit["database"] == "ok")


def check_outcomes(outcomes: list[Outcome], dead_at: float) -> None:
    failed = [o for o in outcomes if o.status is None or o.status >= 500]
    # Only calls already under way when the gateway died: at most one per client.
    assert all(o.started < dead_at for o in failed), failed
    assert len(failed) <= 8
    assert {o.status for o in outcomes} - {200, 429, 502, None} == set()
    assert any(o.status == 429 and o.key == "capped" for o in outcomes), "the budget was hit"


def check_audit(url: str, outcomes: list[Outcome]) -> None:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            counts = dict(
                conn.execute(
                    select(tables.events.c.prompt_sha256, func.count()).group_by(
                        tables.events.c.prompt_sha256
                    )
                ).all()
            )
            capped_cost = conn.execute(
                select(func.coalesce(func.sum(tables.events.c.cost_nanousd), 0),
                       func.max(tables.events.c.cost_nanousd))
                .where(tables.events.c.key_name == "capped")
            ).one()  # fmt: skip
    finally:
        engine.dispose()
    answered = [o for o in outcomes if o.status is not None and o.status < 500]
    missing = [o.n for o in answered if counts.get(prompt_hash(o.n), 0) != 1]
    assert not missing, f"{len(missing)} answered calls not audited exactly once"
    assert all(c == 1 for c in counts.values()), "no event twice"
    spent, largest = (Decimal(int(v or 0)) / 10**9 for v in capped_cost)
    assert spent <= BUDGET_USD + largest, f"spent {spent} of {BUDGET_USD}"


def check_revocation(
    config: Path, env: dict[str, str], secret: str, gateways: list[GatewayProcess]
) -> None:
    headers = {"authorization": f"Bearer {secret}"}

    def statuses() -> list[int]:
        return [httpx.get(gw.url + "/v1/models", headers=headers).status_code for gw in gateways]

    assert statuses() == [200, 200, 200]
    revoked = tollgate(config, env, "keys", "revoke", "victim")
    assert revoked.returncode == 0, revoked.stderr
    at = time.monotonic()
    assert polled(statuses, lambda s: s == [401, 401, 401], timeout=10) == [401, 401, 401]
    # Within the refresh interval (plus the CLI's own exit and one poll of slack).
    assert time.monotonic() - at <= REFRESH_S + 1.0
