"""The Responses API through `tollgate serve` with the official SDK: translated all the way to an
Anthropic upstream (Responses -> chat -> Messages and back), whole, streamed with the SDK's
helper, and with a tool round trip; each call one audit event of endpoint `responses`, and the
log still verifies."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import openai
import pytest
from sqlalchemy import text

from gateway.stores.sql import make_engine
from tests.support.fake_anthropic import FakeAnthropic
from tests.support.servers import GatewayProcess, ThreadServer

KEY = "tg-responses-e2e-key"
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]},
}  # fmt: skip


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    claude = FakeAnthropic()
    tmp = tmp_path_factory.mktemp("responses")
    with ThreadServer(claude.app) as upstream:
        config = tmp / "tollgate.yaml"
        config.write_text(f"""
version: 1
server: {{reload_poll_seconds: 0}}
auth:
  keys: [{{name: tester, key_env: TG_KEY, team: qa}}]
backends:
  claude: {{type: anthropic, base_url: "{upstream.url}", api_key_env: TG_ANTHROPIC_KEY}}
models:
  claude: {{backend: claude, model: claude-fake}}
pricing: [{{backend: claude, input: 3, output: 15}}]
""")
        env = {"TG_KEY": KEY, "TG_ANTHROPIC_KEY": "sk-ant-upstream",
               "TOLLGATE_SECRET": "responses-e2e-secret",
               "TOLLGATE_DATABASE_URL": f"sqlite:///{tmp}/db/tollgate.db"}  # fmt: skip
        with GatewayProcess(config, env=env, log=tmp / "gateway.log") as gw:
            yield gw


def test_responses_on_an_anthropic_upstream_end_to_end(gateway: GatewayProcess) -> None:
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=KEY, max_retries=0)
    first = client.responses.create(model="claude", input="Hi", instructions="Be kind.")
    assert first.output_text == "Hello from Claude." and first.status == "completed"
    assert first.usage is not None and first.usage.input_tokens == 125  # cache reads included
    with client.responses.stream(model="claude", input="Again", previous_response_id=first.id) as s:
        streamed = "".join(e.delta for e in s if e.type == "response.output_text.delta")
        final = s.get_final_response()
    assert streamed == "Hello from Claude." and final.output_text == streamed
    assert final.previous_response_id == first.id
    called = client.responses.create(model="claude", input="Weather in Oslo?", tools=[WEATHER])  # type: ignore[list-item]
    call = next(o for o in called.output if o.type == "function_call")
    assert call.name == "get_weather"
    answer = client.responses.create(
        model="claude",
        previous_response_id=called.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "Cold"}],
        tools=[WEATHER],  # type: ignore[list-item]
    )
    assert answer.output_text == "It is sunny in Paris."  # it answered the tool result
    assert client.responses.retrieve(final.id).output_text == streamed
    client.close()
    deadline = time.monotonic() + 10
    while httpx.get(gateway.url + "/readyz").json()["audit"]["lag_events"]:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    engine = make_engine(gateway.env["TOLLGATE_DATABASE_URL"])
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT endpoint, outcome, status, cost_nanousd FROM tollgate_audit_events")
        ).all()
    engine.dispose()
    assert [(r.endpoint, r.outcome, r.status) for r in rows] == [("responses", "served", 200)] * 4
    assert all(r.cost_nanousd > 0 for r in rows)
    verified = subprocess.run(
        [sys.executable, "-m", "gateway", "audit", "verify", "--config", str(gateway.config)],
        env=gateway.env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert verified.returncode == 0, verified.stderr
