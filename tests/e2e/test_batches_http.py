"""Batch jobs through `tollgate serve` with both official SDKs, as their docs show them: the
OpenAI Batch API (upload, create, poll, download) and Anthropic's Message Batches (create, poll,
results); every line one audit event, and the log still verifies."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import anthropic
import httpx
import openai
from sqlalchemy import text

from gateway.stores.sql import make_engine
from tests.support.servers import GatewayProcess

KEY = "tg-batches-e2e-key"
CONFIG = """
version: 1
server: {reload_poll_seconds: 0}
auth:
  keys: [{name: tester, key_env: TG_KEY, team: qa}]
backends:
  gpu: {type: sim, time_scale: 0, models: [{name: m, input_price_per_mtok: 1,
        output_price_per_mtok: 2}]}
models:
  chat: {backend: gpu, model: m}
batch: {poll_seconds: 0.1}
"""


def test_both_sdks_batch_flows_end_to_end(tmp_path: Path) -> None:
    config = tmp_path / "tollgate.yaml"
    config.write_text(CONFIG)
    env = {"TG_KEY": KEY, "TOLLGATE_SECRET": "batches-e2e",
           "TOLLGATE_DATABASE_URL": f"sqlite:///{tmp_path}/db/tollgate.db"}  # fmt: skip
    with GatewayProcess(config, env=env, log=tmp_path / "gateway.log") as gw:
        client = openai.OpenAI(base_url=gw.url + "/v1", api_key=KEY, max_retries=0)
        lines = [{"custom_id": f"q{i}", "method": "POST", "url": "/v1/chat/completions",
                  "body": {"model": "chat", "max_tokens": 4,
                           "messages": [{"role": "user", "content": f"q {i}"}]}}
                 for i in range(4)]  # fmt: skip
        uploaded = client.files.create(
            file=("in.jsonl", "\n".join(json.dumps(x) for x in lines).encode()), purpose="batch"
        )
        job = client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions",
                                    completion_window="24h")  # fmt: skip
        deadline = time.monotonic() + 30
        while job.status not in ("completed", "failed"):
            assert time.monotonic() < deadline, job
            time.sleep(0.1)
            job = client.batches.retrieve(job.id)
        assert job.status == "completed" and job.request_counts.completed == 4  # type: ignore[union-attr]
        output = client.files.content(job.output_file_id).text.splitlines()  # type: ignore[arg-type]
        assert sorted(json.loads(x)["custom_id"] for x in output) == ["q0", "q1", "q2", "q3"]
        client.close()

        claude = anthropic.Anthropic(base_url=gw.url, api_key=KEY, max_retries=0)
        batch = claude.messages.batches.create(requests=[
            {"custom_id": f"c{i}", "params": {"model": "chat", "max_tokens": 4,
             "messages": [{"role": "user", "content": "hi"}]}} for i in range(3)
        ])  # type: ignore[list-item]  # fmt: skip
        deadline = time.monotonic() + 30
        while batch.processing_status != "ended":
            assert time.monotonic() < deadline, batch
            time.sleep(0.1)
            batch = claude.messages.batches.retrieve(batch.id)
        assert batch.request_counts.succeeded == 3
        results = list(claude.messages.batches.results(batch.id))
        assert sorted(r.custom_id for r in results) == ["c0", "c1", "c2"]
        assert all(r.result.type == "succeeded" for r in results)
        listed = claude.messages.batches.list()
        assert [b.id for b in listed.data] == [batch.id]
        claude.close()
        deadline = time.monotonic() + 10
        while httpx.get(gw.url + "/readyz").json()["audit"]["lag_events"]:
            assert time.monotonic() < deadline
            time.sleep(0.02)
    engine = make_engine(env["TOLLGATE_DATABASE_URL"])
    with engine.connect() as conn:
        ids = conn.execute(text("SELECT request_id FROM tollgate_audit_events")).scalars().all()
    engine.dispose()
    assert sorted(ids) == sorted([f"{job.id}-{i}" for i in range(4)]
                                 + [f"{batch.id}-{i}" for i in range(3)])  # fmt: skip
    verified = subprocess.run(
        [sys.executable, "-m", "gateway", "audit", "verify", "--config", str(config)],
        env={**gw.env}, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert verified.returncode == 0, verified.stderr
