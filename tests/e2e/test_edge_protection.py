"""What one client can do at the edge without harming others: hold connections open, trickle
a body, nest JSON without end, pick its own audited IP, ask for unbounded completions, follow
a Host-built redirect, or count tokens outside the policies and the audit log."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import anthropic
import httpx
import pytest

from tests.support.audit import gateway_events
from tests.support.servers import GatewayProcess
from tests.support.wait import until

KEY = "tg-edge-tests"
COUNTER = "tg-edge-counter"
ADMIN = "adm-edge"
CONFIG = """
version: 1
server: {reload_poll_seconds: 0, header_timeout_seconds: 1, body_timeout_seconds: 1,
         max_completions: 8}
auth:
  keys: [{name: edge, key_env: TG_KEY, team: edge}, {name: counter, key_env: TG_COUNT}]
backends:
  sim: {type: sim, time_scale: 0, models: [{name: m}]}
models:
  chat: {backend: sim, model: m}
limits:
  rate_limits: [{name: counting, scope: key, subject: counter, rpm: 3}]
audit: {ship_interval_ms: 10}
telemetry: {prometheus: {protected: true}}
"""


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    tmp = tmp_path_factory.mktemp("edge")
    (tmp / "tollgate.yaml").write_text(CONFIG)
    env = {"TG_KEY": KEY, "TG_COUNT": COUNTER, "TOLLGATE_ADMIN_KEY": ADMIN}
    with GatewayProcess(tmp / "tollgate.yaml", env=env, log=tmp / "gw.log") as gw:
        yield gw


def _closed(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except TimeoutError:
        return False
    except OSError:
        return True


def test_idle_and_slow_header_connections_are_closed(gateway: GatewayProcess) -> None:
    idle = socket.create_connection(("127.0.0.1", gateway.port))
    slow = socket.create_connection(("127.0.0.1", gateway.port))
    slow.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")  # and never the rest
    for sock in (idle, slow):
        sock.settimeout(0.2)
    try:
        until(lambda: _closed(idle) and _closed(slow), timeout=10)
    finally:
        idle.close()
        slow.close()
    assert httpx.get(gateway.url + "/healthz").status_code == 200  # others are served


def test_a_trickled_body_times_out_with_408(gateway: GatewayProcess) -> None:
    with socket.create_connection(("127.0.0.1", gateway.port)) as sock:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
            + KEY.encode()
            + b'\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"model"'
        )
        sock.settimeout(10)
        reply = b""
        while b"}}" not in reply and (chunk := sock.recv(4096)):
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 408"), reply[:200]
    assert b"request_timeout" in reply


def test_forwarded_for_from_an_untrusted_client_is_not_believed(gateway: GatewayProcess) -> None:
    r = httpx.post(
        gateway.url + "/v1/chat/completions",
        headers={"authorization": f"Bearer {KEY}", "x-forwarded-for": "6.6.6.6"},
        json={"model": "chat", "messages": [{"role": "user", "content": "ip?"}], "max_tokens": 2},
    )
    request_id = r.headers["x-tollgate-request-id"]
    until(lambda: any(e["request_id"] == request_id for e in gateway_events(gateway)), timeout=20)
    event = next(e for e in gateway_events(gateway) if e["request_id"] == request_id)
    assert event["client_ip"] == "127.0.0.1"


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/chat/completions", {"n": 9}),
        ("/v1/completions", {"prompt": ["a", "b", "c"], "best_of": 3}),
    ],
)
def test_completions_per_request_are_bounded(
    gateway: GatewayProcess, path: str, body: dict[str, object]
) -> None:
    base = {"model": "chat", "max_tokens": 1, "messages": [{"role": "user", "content": "x"}]}
    r = httpx.post(
        gateway.url + path, headers={"authorization": f"Bearer {KEY}"}, json={**base, **body}
    )
    assert r.status_code == 400, r.text
    assert "at most 8" in r.json()["error"]["message"]


def test_deep_nesting_is_a_400_not_a_500(gateway: GatewayProcess) -> None:
    deep = "[" * 1000 + "]" * 1000
    raw = (
        '{"model": "chat", "max_tokens": 1, "messages": [{"role": "user", "content": '
        + deep
        + "}]}"
    )
    r = httpx.post(
        gateway.url + "/v1/chat/completions",
        headers={"authorization": f"Bearer {KEY}", "content-type": "application/json"},
        content=raw,
    )
    assert r.status_code == 400 and r.json()["error"]["code"] == "nesting_too_deep"


def test_no_slash_redirect_built_from_the_host_header(gateway: GatewayProcess) -> None:
    r = httpx.get(gateway.url + "/dashboard//", headers={"host": "evil.example"})
    assert r.status_code == 404 and "location" not in r.headers


def test_count_tokens_goes_through_policies_and_the_audit_log(gateway: GatewayProcess) -> None:
    client = anthropic.Anthropic(base_url=gateway.url, api_key=COUNTER, max_retries=0)
    before = len(gateway_events(gateway))
    counted = [
        client.messages.count_tokens(model="chat", messages=[{"role": "user", "content": "hi"}])
        for _ in range(3)
    ]
    assert all(c.input_tokens > 0 for c in counted)
    with pytest.raises(anthropic.RateLimitError):  # the key's rate limit applies to counting
        client.messages.count_tokens(model="chat", messages=[{"role": "user", "content": "hi"}])
    until(lambda: len(gateway_events(gateway)) >= before + 4, timeout=20)
    counts = [e for e in gateway_events(gateway) if e["endpoint"] == "count_tokens"]
    assert [e["outcome"] for e in counts[-4:]] == ["served", "served", "served", "denied"]
    assert all(e["cost_nanousd"] == 0 and e["key_name"] == "counter" for e in counts)


def test_metrics_can_be_protected_and_never_name_a_made_up_model(gateway: GatewayProcess) -> None:
    for i in range(3):
        r = httpx.post(
            gateway.url + "/v1/chat/completions",
            headers={"authorization": f"Bearer {KEY}"},
            json={"model": f"made-up-{i}", "messages": [{"role": "user", "content": "x"}]},
        )
        assert r.status_code == 404
    assert httpx.get(gateway.url + "/metrics").status_code == 401
    scraped = httpx.get(gateway.url + "/metrics", headers={"authorization": f"Bearer {ADMIN}"})
    assert scraped.status_code == 200
    until(
        lambda: (
            "(unknown)"
            in httpx.get(
                gateway.url + "/metrics", headers={"authorization": f"Bearer {ADMIN}"}
            ).text
        ),
        timeout=10,
    )
    assert "made-up" not in scraped.text
