"""An upstream that misbehaves cannot hurt the gateway's clients, its budgets or its audit log:
error bodies are re-said (never a secret, never HTML), garbage is a 502, impossible usage is
an anomaly that is estimated instead, a stream cut short is an error the client sees and is
billed for what it relayed. Through the official SDKs, both dialects, streamed and whole."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import openai
import pytest

from tests.support.audit import gateway_events, gateway_notes
from tests.support.hostile_upstream import UPSTREAM_SECRET, USAGE, HostileUpstream
from tests.support.servers import GatewayProcess, ThreadServer
from tests.support.wait import until

KEY = "tg-hostile-tests"
ADMIN = "adm-hostile"
MODELS = [
    "leaky-401", "html-500", "text-400", "garbage-200", "html-200", "list-200", "garbage-sse",
    "cut-stream", *USAGE,
]  # fmt: skip
HI = [{"role": "user", "content": "Hi"}]


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    tmp = tmp_path_factory.mktemp("hostile")
    with ThreadServer(HostileUpstream().app) as upstream:
        models = "\n".join(f"  {m}: {{backend: hostile, model: {m}}}" for m in MODELS)
        config = tmp / "tollgate.yaml"
        config.write_text(
            f"""
version: 1
server: {{reload_poll_seconds: 0}}
# Every call here fails on purpose, each checked for its own error: no circuit may open.
routing: {{circuit: {{failures: 1000, error_rate: 1.0, min_calls: 10000, window: 10000}}}}
auth:
  keys: [{{name: tester, key_env: TG_KEY, team: qa}}]
backends:
  hostile: {{type: openai, base_url: "{upstream.url}/v1", api_key_env: HOSTILE_KEY}}
models:
{models}
pricing: [{{backend: hostile, input: 1, output: 2}}]
limits:
  budgets: [{{name: qa, scope: team, subject: qa, usd: 1, window: day}}]
audit: {{ship_interval_ms: 10}}
"""
        )
        env = {"TG_KEY": KEY, "HOSTILE_KEY": UPSTREAM_SECRET, "TOLLGATE_ADMIN_KEY": ADMIN}
        with GatewayProcess(config, env=env, log=tmp / "gateway.log") as gw:
            yield gw


def oai(gw: GatewayProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key=KEY, max_retries=0)


def claude(gw: GatewayProcess) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gw.url, api_key=KEY, max_retries=0)


def _openai_call(gw: GatewayProcess, model: str, stream: bool) -> None:
    if stream:
        for _ in oai(gw).chat.completions.create(model=model, messages=HI, stream=True):  # type: ignore[arg-type]
            pass
    else:
        oai(gw).chat.completions.create(model=model, messages=HI)  # type: ignore[arg-type]


def _anthropic_call(gw: GatewayProcess, model: str, stream: bool) -> None:
    if stream:
        with claude(gw).messages.stream(model=model, max_tokens=5, messages=HI) as s:  # type: ignore[arg-type]
            s.get_final_message()
    else:
        claude(gw).messages.create(model=model, max_tokens=5, messages=HI)  # type: ignore[arg-type]


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("dialect", ["openai", "anthropic"])
@pytest.mark.parametrize(
    ("model", "code"),
    [
        ("leaky-401", "upstream_auth_failed"),
        ("html-500", "upstream_unreachable"),
        ("garbage-200", "upstream_bad_response"),
        ("html-200", "upstream_bad_response"),
        ("list-200", "upstream_bad_response"),
    ],
)
def test_a_misbehaving_upstream_is_a_clean_502_with_no_secret(
    gateway: GatewayProcess, model: str, code: str, dialect: str, stream: bool
) -> None:
    if model in ("garbage-200", "html-200", "list-200") and stream:
        model = "garbage-sse"
    call = _openai_call if dialect == "openai" else _anthropic_call
    errors = (openai.APIStatusError, anthropic.APIStatusError)
    with pytest.raises(errors) as info:
        call(gateway, model, stream)
    response = info.value.response
    assert response.status_code == 502
    assert response.headers["content-type"].startswith("application/json")
    text = response.text
    assert UPSTREAM_SECRET not in text and "127.0.0.1" not in text and "<html" not in text
    if dialect == "openai":
        assert response.json()["error"]["code"] == code
        assert "invalid_api_key" not in text
    else:
        assert response.json()["error"]["type"] == "api_error"
    assert response.headers["x-tollgate-request-id"] in text  # quote it to the operators


def test_a_non_json_rejection_is_said_in_the_clients_dialect(gateway: GatewayProcess) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        _openai_call(gateway, "text-400", False)
    assert info.value.response.json()["error"]["message"] == (
        "The upstream rejected the request: HTTP 400"
    )


def _spend(gw: GatewayProcess) -> dict[str, Any]:
    r = httpx.get(
        gw.url + "/admin/spend?group_by=team&window=day",
        headers={"authorization": f"Bearer {ADMIN}"},
        timeout=10,
    )
    return r.json()  # type: ignore[no-any-return]


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("model", list(USAGE))
def test_impossible_usage_is_an_anomaly_that_is_estimated_instead(
    gateway: GatewayProcess, model: str, stream: bool
) -> None:
    client = oai(gateway)
    if stream:
        chunks = list(
            client.chat.completions.create(
                model=model, messages=HI, max_tokens=5, stream=True,  # type: ignore[arg-type]
                stream_options={"include_usage": True},
            )
        )  # fmt: skip
        request_id = chunks[0]._request_id if hasattr(chunks[0], "_request_id") else None
    else:
        reply = client.chat.completions.with_raw_response.create(
            model=model,
            messages=HI,
            max_tokens=5,  # type: ignore[arg-type]
        )
        request_id = reply.headers["x-tollgate-request-id"]
    assert request_id is None or len(request_id) == 32
    # Budgets still work (the counter store took no impossible value, nothing is credited).
    oai(gateway).chat.completions.create(model="over-output", messages=HI, max_tokens=5)  # type: ignore[arg-type]
    spend = _spend(gateway)
    total = float(spend["total"]["usd"])
    assert 0 < total < 0.01, spend
    until(lambda: any(e["model"] == model for e in gateway_events(gateway)), timeout=20)
    event = next(e for e in reversed(gateway_events(gateway)) if e["model"] == model)
    assert event["usage_estimated"] == 1
    assert 0 <= event["input_tokens"] < 1000 and 0 <= event["output_tokens"] <= 5
    notes = gateway_notes(gateway, event["request_id"])
    assert any(n.startswith("usage anomaly") for n in notes), notes


def test_a_stream_cut_short_is_an_error_the_client_sees_and_is_billed(
    gateway: GatewayProcess,
) -> None:
    before = float(_spend(gateway)["total"]["usd"])
    with pytest.raises(openai.APIError):
        for _ in oai(gateway).chat.completions.create(model="cut-stream", messages=HI, stream=True):  # type: ignore[arg-type]
            pass
    until(lambda: any(e["model"] == "cut-stream" for e in gateway_events(gateway)), timeout=20)
    event = next(e for e in gateway_events(gateway) if e["model"] == "cut-stream")
    assert (event["outcome"], event["status"]) == ("upstream_error", 200)
    assert event["error_type"] == "upstream_bad_response"
    assert event["output_tokens"] > 0 and event["cost_nanousd"] > 0
    until(lambda: float(_spend(gateway)["total"]["usd"]) > before, timeout=10)
