"""The Anthropic dialect end to end, with the official SDKs, through `tollgate serve`:
Anthropic clients on an Anthropic upstream (native) and on an OpenAI-compatible one (the
simulator, translated); OpenAI clients on the Anthropic upstream; Azure OpenAI URLs."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest

from gateway.accounting.tokens import TokenCounter
from gateway.sim.config import SimConfig
from gateway.sim.server import SimServer
from tests.support.fake_anthropic import FakeAnthropic
from tests.support.fake_upstream import FakeUpstream
from tests.support.servers import GatewayProcess, ThreadServer

KEY = "tg-anthropic-tests"
TOOLS = [
    {
        "name": "get_weather",
        "description": "Weather for a city",
        "input_schema": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    }
]
OPENAI_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": t["name"],
            "description": t["description"],
            "parameters": t["input_schema"],
        },
    }
    for t in TOOLS
]


class Stack:
    def __init__(self, gateway: GatewayProcess, claude: FakeAnthropic, fake: FakeUpstream) -> None:
        self.gateway = gateway
        self.claude = claude
        self.fake = fake
        self._anthropic = anthropic.Anthropic(base_url=gateway.url, api_key=KEY, max_retries=0)
        self._openai = openai.OpenAI(base_url=gateway.url + "/v1", api_key=KEY, max_retries=0)
        self._others: list[anthropic.Anthropic] = []

    def anthropic(self, key: str | None = KEY) -> anthropic.Anthropic:
        if key == KEY:
            return self._anthropic
        client = anthropic.Anthropic(base_url=self.gateway.url, api_key=key, max_retries=0)
        self._others.append(client)
        return client

    def openai(self) -> openai.OpenAI:
        return self._openai

    def close(self) -> None:
        for client in (self._anthropic, self._openai, *self._others):
            client.close()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    claude, fake = FakeAnthropic(), FakeUpstream()
    simulated = SimServer(
        SimConfig.model_validate_json('{"time_scale": 0, "models": [{"name": "claude-sim"}]}'),
        TokenCounter(),
    )
    tmp = tmp_path_factory.mktemp("anthropic")
    with (
        ThreadServer(claude.app) as claude_server,
        ThreadServer(fake.app) as fake_server,
        ThreadServer(simulated.app) as sim_server,
    ):
        config = tmp / "tollgate.yaml"
        config.write_text(
            f"""
version: 1
server: {{reload_poll_seconds: 0}}
auth:
  keys: [{{name: tester, key_env: TG_KEY, team: qa}}]
backends:
  claude: {{type: anthropic, base_url: "{claude_server.url}", api_key_env: TG_ANTHROPIC_KEY}}
  fake: {{type: openai, base_url: "{fake_server.url}/v1"}}
  azure:
    type: azure_openai
    endpoint: "{fake_server.url}"
    api_version: "2024-10-21"
    api_key_env: TG_AZURE_KEY
    deployments: {{gpt-4o: prod-gpt4o}}
  sim: {{type: sim, time_scale: 0, models: [{{name: simmodel}}]}}
  anthropic-sim: {{type: anthropic, base_url: "{sim_server.url}", api_key_env: TG_ANTHROPIC_KEY}}
models:
  claude-sim: {{backend: anthropic-sim, model: claude-sim}}
  claude: {{backend: claude, model: claude-fake}}
  claude-429: {{backend: claude, model: claude-429}}
  claude-529: {{backend: claude, model: claude-529}}
  claude-long: {{backend: claude, model: claude-long}}
  local: {{backend: sim, model: simmodel}}
  openai-429: {{backend: fake, model: rate-limited}}
  azure-chat: {{backend: azure, model: gpt-4o}}
pricing: [{{free: true}}]
"""
        )
        env = {"TG_KEY": KEY, "TG_ANTHROPIC_KEY": "sk-ant-upstream", "TG_AZURE_KEY": "az-key"}
        with GatewayProcess(config, env=env, log=tmp / "gateway.log") as gateway:
            built = Stack(gateway, claude, fake)
            yield built
            built.close()


HI = [{"role": "user", "content": "Hi"}]
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


# --- Anthropic SDK, Anthropic upstream (native) -------------------------------------------


def test_native_message(stack: Stack) -> None:
    message = stack.anthropic().messages.create(
        model="claude",
        max_tokens=50,
        messages=HI,  # type: ignore[arg-type]
        extra_headers={
            "anthropic-version": "2099-01-01",
            "anthropic-beta": "some-beta",
            "traceparent": TRACEPARENT,
        },
    )
    assert message.content[0].text == "Hello from Claude."  # type: ignore[union-attr]
    assert message.stop_reason == "end_turn"
    assert (message.usage.input_tokens, message.usage.cache_read_input_tokens) == (20, 100)
    headers = stack.claude.headers[-1]
    assert headers["x-api-key"] == "sk-ant-upstream", "the upstream key, never the client's"
    assert headers["anthropic-version"] == "2099-01-01", "the client's API version is honoured"
    assert headers["anthropic-beta"] == "some-beta"
    assert headers["traceparent"].startswith(TRACEPARENT[:36])  # the client's trace goes on
    assert headers["traceparent"] != TRACEPARENT  # with the gateway's upstream span as parent
    assert stack.claude.requests[-1]["model"] == "claude-fake"


def test_native_stream_with_the_sdk_helpers(stack: Stack) -> None:
    client = stack.anthropic()
    with client.messages.stream(model="claude", max_tokens=50, messages=HI) as stream:  # type: ignore[arg-type]
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "Hello from Claude."
    assert final.content[0].text == text  # type: ignore[union-attr]
    assert final.usage.output_tokens == 6 and final.stop_reason == "end_turn"


def test_native_tool_round_trip(stack: Stack) -> None:
    client = stack.anthropic()
    first = client.messages.create(
        model="claude",
        max_tokens=100,
        tools=TOOLS,
        messages=HI,  # type: ignore[arg-type]
    )
    assert first.stop_reason == "tool_use"
    call = first.content[0]
    assert call.type == "tool_use" and call.input == {"city": "Paris"}
    second = client.messages.create(
        model="claude",
        max_tokens=100,
        tools=TOOLS,  # type: ignore[arg-type]
        messages=[
            *HI,
            {"role": "assistant", "content": first.content},  # type: ignore[list-item]
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "sunny"}],
            },
        ],
    )
    assert second.content[0].text == "It is sunny in Paris."  # type: ignore[union-attr]


def test_count_tokens_is_asked_of_anthropic(stack: Stack) -> None:
    counted = stack.anthropic().messages.count_tokens(model="claude", messages=HI)  # type: ignore[arg-type]
    assert counted.input_tokens == 1234


def test_auth_errors_in_anthropic_shape(stack: Stack) -> None:
    with pytest.raises(anthropic.AuthenticationError) as info:
        stack.anthropic(key="wrong").messages.create(model="claude", max_tokens=5, messages=HI)  # type: ignore[arg-type]
    assert info.value.body["error"]["type"] == "authentication_error"  # type: ignore[index]
    with pytest.raises(anthropic.NotFoundError):
        stack.anthropic().messages.create(model="nope", max_tokens=5, messages=HI)  # type: ignore[arg-type]
    with pytest.raises(anthropic.BadRequestError, match="max_tokens"):
        stack.anthropic().post(
            "/v1/messages", cast_to=object, body={"model": "claude", "messages": HI}
        )


def test_upstream_errors_reach_anthropic_clients_as_sent(stack: Stack) -> None:
    with pytest.raises(anthropic.RateLimitError) as info:
        stack.anthropic().messages.create(model="claude-429", max_tokens=5, messages=HI)  # type: ignore[arg-type]
    assert info.value.response.headers["retry-after"] == "9"


# --- Anthropic SDK, OpenAI-compatible upstream (the simulator, translated) -----------------


def test_translated_message_and_stream_from_the_simulator(stack: Stack) -> None:
    client = stack.anthropic()
    message = client.messages.create(
        model="local",
        max_tokens=7,
        system="Be brief.",
        messages=HI,  # type: ignore[arg-type]
    )
    assert message.stop_reason == "max_tokens" and message.usage.output_tokens == 7
    assert len(message.content[0].text.split()) == 7  # type: ignore[union-attr]
    with client.messages.stream(model="local", max_tokens=5, messages=HI) as stream:  # type: ignore[arg-type]
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert len(text.split()) == 5 and final.content[0].text == text  # type: ignore[union-attr]
    assert final.usage.output_tokens == 5 and final.usage.input_tokens > 0


def test_translated_tools_from_the_simulator(stack: Stack) -> None:
    client = stack.anthropic()
    message = client.messages.create(
        model="local",
        max_tokens=50,
        tools=TOOLS,  # type: ignore[arg-type]
        tool_choice={"type": "any"},
        messages=HI,  # type: ignore[arg-type]
    )
    assert message.stop_reason == "tool_use"
    call = message.content[0]
    assert call.type == "tool_use" and call.name == "get_weather" and "city" in call.input  # type: ignore[operator]
    reply = client.messages.create(
        model="local",
        max_tokens=5,
        tools=TOOLS,  # type: ignore[arg-type]
        messages=[
            *HI,
            {"role": "assistant", "content": message.content},  # type: ignore[list-item]
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "rain"}],
            },
        ],
    )
    assert reply.content[0].type == "text"
    with client.messages.stream(
        model="local",
        max_tokens=50,
        tools=TOOLS,
        tool_choice={"type": "any"},
        messages=HI,  # type: ignore[arg-type]
    ) as stream:
        final = stream.get_final_message()
    assert final.content[0].type == "tool_use" and isinstance(final.content[0].input, dict)


def test_translated_count_tokens_and_errors(stack: Stack) -> None:
    counted = stack.anthropic().messages.count_tokens(model="local", messages=HI)  # type: ignore[arg-type]
    assert counted.input_tokens > 0
    with pytest.raises(anthropic.AuthenticationError):
        stack.anthropic(key="wrong").messages.create(model="local", max_tokens=5, messages=HI)  # type: ignore[arg-type]
    with pytest.raises(anthropic.RateLimitError) as info:
        stack.anthropic().messages.create(model="openai-429", max_tokens=5, messages=HI)  # type: ignore[arg-type]
    assert info.value.response.headers["retry-after"] == "7"
    assert info.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]


# --- OpenAI SDK, Anthropic upstream (translated) --------------------------------------------


def test_openai_chat_on_claude(stack: Stack) -> None:
    reply = stack.openai().chat.completions.create(
        model="claude",
        messages=[{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hi"}],
        max_tokens=50,
        stop=["END"],
        extra_headers={"traceparent": TRACEPARENT},
    )
    assert reply.choices[0].message.content == "Hello from Claude."
    assert stack.claude.headers[-1]["traceparent"].startswith(TRACEPARENT[:36])  # translated too
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage is not None and reply.usage.prompt_tokens == 125
    assert reply.usage.prompt_tokens_details.cached_tokens == 100  # type: ignore[union-attr]
    sent = stack.claude.requests[-1]
    assert sent["system"] == "Be kind." and sent["stop_sequences"] == ["END"]
    assert sent["messages"] == [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}]


def test_openai_stream_on_claude(stack: Stack) -> None:
    client = stack.openai()
    chunks = list(
        client.chat.completions.create(
            model="claude",
            messages=HI,  # type: ignore[arg-type]
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello from Claude."
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 6
    plain = list(client.chat.completions.create(model="claude", messages=HI, stream=True))  # type: ignore[arg-type]
    assert all(c.usage is None for c in plain), "no usage chunk unless asked"
    assert [c.choices[0].finish_reason for c in plain if c.choices][-1] == "stop"


def test_openai_tools_on_claude(stack: Stack) -> None:
    client = stack.openai()
    first = client.chat.completions.create(model="claude", messages=HI, tools=OPENAI_TOOLS)  # type: ignore[arg-type]
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]  # type: ignore[index]
    assert call.function.name == "get_weather"  # type: ignore[union-attr]
    assert json.loads(call.function.arguments) == {"city": "Paris"}  # type: ignore[union-attr]
    second = client.chat.completions.create(
        model="claude",
        tools=OPENAI_TOOLS,  # type: ignore[arg-type]
        messages=[
            *HI,
            choice.message.model_dump(exclude_none=True),  # type: ignore[list-item]
            {"role": "tool", "tool_call_id": call.id, "content": "sunny"},
        ],
    )
    assert second.choices[0].message.content == "It is sunny in Paris."
    streamed = list(
        client.chat.completions.create(model="claude", messages=HI, tools=OPENAI_TOOLS, stream=True)  # type: ignore[arg-type]
    )
    arguments = "".join(
        (c.choices[0].delta.tool_calls or [None])[0].function.arguments or ""  # type: ignore[union-attr]
        for c in streamed
        if c.choices and c.choices[0].delta.tool_calls
    )
    assert json.loads(arguments) == {"city": "Paris"}


@pytest.mark.parametrize(
    ("model", "error", "status"),
    [
        ("claude-429", openai.RateLimitError, 429),
        ("claude-529", openai.InternalServerError, 503),
        ("claude-long", openai.BadRequestError, 400),
    ],
)
def test_anthropic_errors_reach_openai_clients_translated(
    stack: Stack, model: str, error: type[openai.APIStatusError], status: int
) -> None:
    with pytest.raises(error) as info:
        stack.openai().chat.completions.create(model=model, messages=HI)  # type: ignore[arg-type]
    assert info.value.status_code == status
    body: Any = info.value.body
    assert "message" in body
    if status == 429:
        assert info.value.response.headers["retry-after"] == "9"
    if status == 400:
        assert body["code"] == "context_length_exceeded"


def test_completions_cannot_go_to_anthropic(stack: Stack) -> None:
    with pytest.raises(openai.BadRequestError, match="chat completions only"):
        stack.openai().completions.create(model="claude", prompt="x")


# --- Azure OpenAI ------------------------------------------------------------------------


def test_azure_deployment_url_and_key(stack: Stack) -> None:
    reply = stack.openai().chat.completions.create(model="azure-chat", messages=HI)  # type: ignore[arg-type]
    assert reply.choices[0].message.content
    assert stack.fake.azure[-1] == ("prod-gpt4o", "2024-10-21", "az-key")


def test_bearer_auth_and_budgets_count_anthropic_calls(stack: Stack) -> None:
    import httpx

    response = httpx.post(
        stack.gateway.url + "/v1/messages",
        json={"model": "claude", "max_tokens": 5, "messages": HI},
        headers={"authorization": f"Bearer {KEY}", "anthropic-version": "2023-06-01"},
    )
    assert response.status_code == 200 and response.json()["type"] == "message"
    assert response.headers["request-id"] == response.headers["x-tollgate-request-id"]
    missing = httpx.post(stack.gateway.url + "/v1/messages", json={"model": "claude"})
    assert missing.status_code == 401
    assert missing.json()["error"]["type"] == "authentication_error"


def test_models_list_in_each_dialect(stack: Stack) -> None:
    listed = stack.anthropic().models.list()
    ids = [m.id for m in listed.data]
    assert "claude" in ids and "local" in ids
    assert stack.anthropic().models.retrieve("local").type == "model"
    with pytest.raises(anthropic.NotFoundError):
        stack.anthropic().models.retrieve("nope")
    assert "claude" in [m.id for m in stack.openai().models.list().data]


# --- The `anthropic` backend type against the simulator's native Messages API -----------------


def test_anthropic_backend_end_to_end_on_the_simulator(stack: Stack) -> None:
    client = stack.anthropic()
    message = client.messages.create(model="claude-sim", max_tokens=6, messages=HI)  # type: ignore[arg-type]
    assert message.stop_reason == "max_tokens" and message.usage.output_tokens == 6
    with client.messages.stream(model="claude-sim", max_tokens=4, messages=HI) as stream:  # type: ignore[arg-type]
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert len(text.split()) == 4 and final.usage.output_tokens == 4
    used = client.messages.create(
        model="claude-sim",
        max_tokens=100,
        tools=TOOLS,  # type: ignore[arg-type]
        tool_choice={"type": "tool", "name": "get_weather"},
        messages=HI,  # type: ignore[arg-type]
    )
    assert used.stop_reason == "tool_use" and "city" in used.content[0].input  # type: ignore[union-attr,operator]
    chat = stack.openai().chat.completions.create(
        model="claude-sim",
        max_tokens=5,
        messages=HI,  # type: ignore[arg-type]
    )  # an OpenAI client on the Anthropic backend: translated
    assert chat.choices[0].finish_reason == "length" and chat.usage is not None
    assert chat.usage.completion_tokens == 5


def test_a_stop_sequence_comes_back_as_anthropic_says_it(stack: Stack) -> None:
    """Through translation to an OpenAI-compatible engine that says which stop matched (vLLM,
    SGLang, the simulator), and natively."""
    client = stack.anthropic()
    for model in ("local", "claude-sim"):
        plain = client.messages.create(model=model, max_tokens=30, messages=HI)  # type: ignore[arg-type]
        word = " " + plain.content[0].text.split()[4]  # type: ignore[union-attr]
        stopped = client.messages.create(
            model=model,
            max_tokens=30,
            stop_sequences=[word],
            messages=HI,  # type: ignore[arg-type]
        )
        assert stopped.stop_reason == "stop_sequence" and stopped.stop_sequence == word, model
        with client.messages.stream(
            model=model,
            max_tokens=30,
            stop_sequences=[word],
            messages=HI,  # type: ignore[arg-type]
        ) as stream:
            final = stream.get_final_message()
        assert final.stop_reason == "stop_sequence" and final.stop_sequence == word, model
