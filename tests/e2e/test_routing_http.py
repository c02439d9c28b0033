"""Routing as users meet it: a stream cut after its first chunk reaches the SDK as an error in
its dialect and is never retried; a call that needed a retry is audited with its attempts;
/readyz and the admin API show every replica's state."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import anthropic
import httpx
import openai
import pytest

from tests.e2e.test_cli_and_reload import run_cli
from tests.support.audit import gateway_events
from tests.support.servers import GatewayProcess, free_port
from tests.support.wait import until

KEY = "tg-routing-key"
ADMIN = "tg-routing-admin"


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    tmp = tmp_path_factory.mktemp("routing")
    config = tmp / "tollgate.yaml"
    down = free_port()  # nothing listens here: every attempt on it is refused
    config.write_text(
        f"""
version: 1
server: {{reload_poll_seconds: 0}}
auth:
  keys: [{{name: tester, key_env: TG_KEY, team: qa}}]
admin: {{key_env: TG_ADMIN}}
backends:
  cut-a: {{type: sim, time_scale: 0, faults: {{drop_rate: 1.0}}, models: [{{name: m}}]}}
  cut-b: {{type: sim, time_scale: 0, faults: {{drop_rate: 1.0}}, models: [{{name: m}}]}}
  ok: {{type: sim, time_scale: 0, models: [{{name: m}}]}}
  down: {{type: openai, base_url: "http://127.0.0.1:{down}/v1"}}
models:
  cut: {{tiers: {{fp16: [{{backend: cut-a, model: m}}, {{backend: cut-b, model: m}}]}}}}
  chat:
    tiers:
      fp16: [{{backend: down, model: m}}]
      int4: [{{backend: ok, model: m}}]
    default_tier: fp16
    fallbacks: [int4]
    retry: {{attempts: 3, backoff_ms: 0}}
pricing: [{{backend: down, input: 1, output: 2}}]
audit: {{ship_interval_ms: 10}}
"""
    )
    with GatewayProcess(config, env={"TG_KEY": KEY, "TG_ADMIN": ADMIN}) as gw:
        yield gw


def test_a_cut_stream_is_an_openai_error_and_is_tried_once(gateway: GatewayProcess) -> None:
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=KEY, max_retries=0)
    stream = client.chat.completions.create(
        model="cut", messages=[{"role": "user", "content": "hi"}], max_tokens=20, stream=True
    )
    chunks = []
    with pytest.raises(openai.APIError) as info:
        chunks.extend(stream)
    assert chunks  # it failed after the client had its first chunk
    assert info.value.message  # the error event's message, in OpenAI's shape
    client.close()
    until(lambda: bool(gateway_events(gateway, "WHERE model = 'cut'")))
    (row,) = gateway_events(gateway, "WHERE model = 'cut'")
    assert row["attempts"] == 1 and row["outcome"] == "upstream_error" and row["status"] == 200


def test_a_cut_stream_is_an_anthropic_error_event(gateway: GatewayProcess) -> None:
    client = anthropic.Anthropic(base_url=gateway.url, api_key=KEY, max_retries=0)
    with (
        pytest.raises(anthropic.APIStatusError),
        client.messages.stream(
            model="cut", max_tokens=20, messages=[{"role": "user", "content": "hi"}]
        ) as stream,
    ):
        for _ in stream:
            pass
    client.close()
    where = "WHERE model = 'cut' AND dialect = 'anthropic'"
    until(lambda: bool(gateway_events(gateway, where)))
    (row,) = gateway_events(gateway, where)
    assert row["attempts"] == 1 and row["outcome"] == "upstream_error"


def test_a_call_that_fell_back_is_served_and_audited_with_every_attempt(
    gateway: GatewayProcess,
) -> None:
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=KEY, max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="chat", messages=[{"role": "user", "content": "hi"}], max_tokens=3
    )
    client.close()
    assert raw.headers["x-tollgate-tier"] == "int4"
    assert raw.headers["x-tollgate-backend"] == "ok"
    request_id = raw.headers["x-request-id"]
    until(lambda: bool(gateway_events(gateway, "WHERE request_id = ?", request_id)))
    (row,) = gateway_events(gateway, "WHERE request_id = ?", request_id)
    assert row["attempts"] >= 2 and row["backend"] == "ok"
    path = gateway.env["TOLLGATE_DATABASE_URL"].removeprefix("sqlite:///")
    with sqlite3.connect(path) as db:
        tries = db.execute(
            "SELECT backend, tier, status, error_type FROM tollgate_audit_attempts "
            "WHERE chain_id = ? AND seq = ? ORDER BY position",
            (row["chain_id"], row["seq"]),
        ).fetchall()
    assert tries[-1] == ("ok", "int4", 200, None)
    assert all(t[:3] == ("down", "fp16", 0) and t[3] == "upstream_unreachable" for t in tries[:-1])


def test_readyz_and_the_admin_api_show_each_replica(gateway: GatewayProcess) -> None:
    # Its own call first (the fp16 replica is down: a failure it records), in any test order.
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=KEY, max_retries=0)
    client.chat.completions.create(model="chat", messages=[{"role": "user", "content": "hi"}],
                                   max_tokens=3)  # fmt: skip
    client.close()
    ready = httpx.get(gateway.url + "/readyz").json()
    chat = ready["replicas"]["chat"]
    assert set(chat) == {"fp16", "int4"}
    (down,) = chat["fp16"]
    assert down["backend"] == "down" and down["failures"] >= 1
    admin = httpx.get(
        gateway.url + "/admin/replicas", headers={"authorization": f"Bearer {ADMIN}"}
    ).json()
    assert admin["replicas"]["cut"]["fp16"][0]["backend"] in ("cut-a", "cut-b")
    metrics = httpx.get(gateway.url + "/metrics").text
    assert 'tollgate_replica_failures_total{backend="down",model="m"}' in metrics


def test_the_config_check_explains_the_new_shape(tmp_path: Path) -> None:
    old = tmp_path / "old.yaml"
    old.write_text(
        "version: 1\nbackends:\n  s: {type: sim, models: [{name: m}]}\n"
        "models:\n  chat:\n    targets: [{backend: s, model: m}]\n"
    )
    result = run_cli("config", "check", str(old))
    assert result.returncode != 0
    assert "models.chat.targets: Value error, `targets` was replaced by tiers" in result.stderr
    assert "docs/routing.md" in result.stderr
