"""A gateway killed (SIGKILL) mid-batch: another gateway of the fleet takes the job over once
its lease ends and finishes it; no line is run to completion or charged twice, and once the
killed gateway is back on its journal, the audit log holds exactly one event per line.

The killed gateway runs one line at a time, and is killed just after it started a line (that
line is then mid-generation, far from its end), so which lines it finished is exact."""

from __future__ import annotations

import json
import signal
import time
from decimal import Decimal
from pathlib import Path

import httpx
import openai
from sqlalchemy import select, text

from gateway.stores.sql import batch_lines, make_engine
from tests.support.servers import GatewayProcess
from tests.support.services import redis_prefix

KEY, ADMIN = "tg-takeover-key", "tg-takeover-admin"
CONFIG = """
version: 1
server: {{reload_poll_seconds: 0}}
logging: {{requests: false}}
auth:
  keys: [{{name: tester, key_env: TG_KEY, team: qa}}]
backends:
  gpu:
    type: sim
    time_scale: 1
    models: [{{name: m, decode_ms_per_token: 80, input_price_per_mtok: 1000,
              output_price_per_mtok: 2000, slots: 16}}]
models:
  chat: {{backend: gpu, model: m}}
limits:
  store: redis
  key_prefix: {prefix}
  prompt_margin: 0
  budgets: [{{name: qa-day, scope: team, subject: qa, usd: "5", window: total}}]
audit: {{ship_interval_ms: 20}}
batch: {{poll_seconds: 0.1, lease_seconds: 2, concurrency: {concurrency}, spare_below: 16}}
"""
LINES = 20  # ~0.5 s each, one at a time: the second gateway is up long before the last


def _config(tmp: Path, name: str, prefix: str, concurrency: int) -> Path:
    path = tmp / f"{name}.yaml"
    path.write_text(CONFIG.format(prefix=prefix, concurrency=concurrency))
    return path


def _lines_by(engine: object, ident: str, status: str) -> list[tuple[int, str | None]]:
    with engine.connect() as conn:  # type: ignore[attr-defined]
        rows = conn.execute(
            select(batch_lines.c.line, batch_lines.c.owner)
            .where(batch_lines.c.batch_id == ident, batch_lines.c.status == status)
        ).all()  # fmt: skip
    return [(r.line, r.owner) for r in rows]


def test_a_killed_owners_job_is_finished_by_another_gateway_once(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path}/shared.db"
    engine = make_engine(db)
    with redis_prefix() as prefix:
        common = {"TG_KEY": KEY, "TOLLGATE_ADMIN_KEY": ADMIN, "TOLLGATE_DATABASE_URL": db}
        journals = {name: {**common, "TOLLGATE_AUDIT_DIR": str(tmp_path / f"journal-{name}")}
                    for name in ("a", "b")}  # fmt: skip
        first = GatewayProcess(_config(tmp_path, "a", prefix, 1), log=tmp_path / "a.log",
                               env=journals["a"])  # fmt: skip
        second = GatewayProcess(_config(tmp_path, "b", prefix, 2), log=tmp_path / "b.log",
                                env=journals["b"])  # fmt: skip
        with first:
            client = openai.OpenAI(base_url=first.url + "/v1", api_key=KEY, max_retries=0)
            body = [{"custom_id": f"c{i}", "method": "POST", "url": "/v1/chat/completions",
                     "body": {"model": "chat", "max_tokens": 6,
                              "messages": [{"role": "user", "content": f"line {i}"}]}}
                    for i in range(LINES)]  # fmt: skip
            uploaded = client.files.create(
                file=("in.jsonl", "\n".join(json.dumps(b) for b in body).encode()),
                purpose="batch",
            )
            job = client.batches.create(input_file_id=uploaded.id, completion_window="24h",
                                        endpoint="/v1/chat/completions")  # fmt: skip
            client.close()
            with second:
                # With both up, kill the first gateway just after it started a line.
                started = len(_lines_by(engine, job.id, "succeeded")) + 1
                deadline = time.monotonic() + 30
                while not any(n >= started for n, _ in _lines_by(engine, job.id, "running")):
                    assert time.monotonic() < deadline, "the first gateway never got that far"
                    time.sleep(0.005)
                assert first.proc is not None
                first.proc.send_signal(signal.SIGKILL)
                first.proc.wait(10)
                finished_by_first = _lines_by(engine, job.id, "succeeded")
                assert 1 <= len(finished_by_first) < LINES
                client = openai.OpenAI(base_url=second.url + "/v1", api_key=KEY, max_retries=0)
                deadline = time.monotonic() + 60
                while (done := client.batches.retrieve(job.id)).status != "completed":
                    assert time.monotonic() < deadline, done
                    time.sleep(0.1)
                assert done.request_counts.completed == LINES  # type: ignore[union-attr]
                output = client.files.content(done.output_file_id).text.splitlines()  # type: ignore[arg-type]
                assert sorted(json.loads(x)["custom_id"] for x in output) == sorted(
                    f"c{i}" for i in range(LINES)
                )
                client.close()
                headers = {"authorization": f"Bearer {ADMIN}"}
                budget = httpx.get(second.url + "/admin/budgets/qa-day?for=qa",
                                   headers=headers).json()  # fmt: skip
                spend = httpx.get(second.url + "/admin/spend?group_by=team&window=total",
                                  headers=headers).json()  # fmt: skip
                counter, spent = Decimal(budget["usage"]["usd"]), Decimal(spend["total"]["usd"])
                assert counter == spent > 0, "every line settled once; nothing left reserved"
                _shipped(second)
            first.start()  # back on its journal: what it finished reaches the audit table
            _shipped(first)
        with engine.connect() as conn:
            rows = conn.execute(
                text("SELECT request_id, cost_nanousd FROM tollgate_audit_events")
            ).all()
        engine.dispose()
    ids = sorted(r.request_id for r in rows)
    assert ids == sorted(f"{job.id}-{i}" for i in range(LINES)), "one audit event per line"
    assert Decimal(sum(r.cost_nanousd for r in rows)) / 10**9 == spent


def _shipped(gw: GatewayProcess) -> None:
    deadline = time.monotonic() + 15
    while httpx.get(gw.url + "/readyz").json()["audit"]["lag_events"]:
        assert time.monotonic() < deadline
        time.sleep(0.02)
