"""Vendor prompt caches on a rule's say-so: Anthropic breakpoints on long stable prefixes,
OpenAI's prompt_cache_key per tenant, and cache reads and writes priced as billed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gateway.accounting.tokens import TokenCounter
from gateway.backends.asgi import StreamingASGITransport
from gateway.call import Call, CallRecord, Principal
from gateway.pipeline import Pipeline
from gateway.recorder import Recorder
from gateway.tenancy import tenant_key
from tests.support.fake_anthropic import FakeAnthropic
from tests.support.fake_upstream import FakeUpstream
from tests.support.runtime import make_deps, runtime_from

LONG = "All answers follow the house style guide. " * 120  # ~5,000 characters
TOOLS = [{"name": "lookup", "description": "Finds an order. " * 300,
          "input_schema": {"type": "object", "properties": {}}}]  # fmt: skip


def config(base_url: str, kind: str) -> str:
    return f"""
version: 1
auth: {{keys: [{{name: t, key_sha256: "{"0" * 64}"}}]}}
backends:
  up: {{type: {kind}, base_url: "{base_url}"}}
models:
  claude: {{backend: up, model: claude-fake}}
  other: {{backend: up, model: claude-fake}}
pricing:
  - {{backend: up, input: 3, output: 15, cached_input: 0.3, cache_write: 3.75}}
policies:
  - use: rules
    with:
      rules:
        - {{name: cache-claude, match: {{model: claude}}, actions: {{prompt_cache: {{}}}}}}
"""


class Sink:
    def __init__(self) -> None:
        self.records: list[CallRecord] = []

    def submit(self, record: CallRecord) -> None:
        self.records.append(record)


async def run(tmp: Path, app: Any, text: str, call: Call) -> CallRecord:
    transport = StreamingASGITransport(app)
    runtime = runtime_from(tmp / "tollgate.yaml", text, make_deps(transport, TokenCounter()))
    sink = Sink()
    reply = await Pipeline(Recorder(sink, TokenCounter())).handle(call, runtime)  # type: ignore[arg-type]
    reply.seal()
    await reply.done()
    await runtime.aclose()
    return sink.records[-1]


def messages_call(model: str, **body: Any) -> Call:
    payload = {"model": model, "max_tokens": 5, "system": LONG, "tools": TOOLS,
               "messages": [{"role": "user", "content": "Where is order 1?"},
                            {"role": "assistant", "content": "Let me look. " * 200},
                            {"role": "user", "content": "And order 2?"}], **body}  # fmt: skip
    return Call("r", "anthropic", "messages", model, payload, False, False,
                principal=Principal("k", "k", team="blue"))  # fmt: skip


def marks(body: dict[str, Any]) -> list[str]:
    out = []
    if "cache_control" in body["tools"][-1]:
        out.append("tools")
    if isinstance(body["system"], list) and "cache_control" in body["system"][-1]:
        out.append("system")
    for i, m in enumerate(body["messages"]):
        if isinstance(m["content"], list) and "cache_control" in m["content"][-1]:
            out.append(f"message {i}")
    return out


async def test_breakpoints_go_on_tools_system_and_the_history(tmp_path: Path) -> None:
    claude = FakeAnthropic()
    record = await run(tmp_path, claude.app, config("http://claude.test", "anthropic"),
                       messages_call("claude"))  # fmt: skip
    sent = claude.requests[-1]
    assert marks(sent) == ["tools", "system", "message 1"]
    assert sent["messages"][2] == {"role": "user", "content": "And order 2?"}
    assert any("vendor prompt cache" in d.reason for d in record.decisions)


async def test_no_rule_no_breakpoints_and_a_clients_own_are_kept(tmp_path: Path) -> None:
    claude = FakeAnthropic()
    await run(tmp_path, claude.app, config("http://claude.test", "anthropic"),
              messages_call("other"))  # fmt: skip
    assert marks(claude.requests[-1]) == []
    own = [{"type": "text", "text": LONG, "cache_control": {"type": "ephemeral"}}]
    await run(tmp_path, claude.app, config("http://claude.test", "anthropic"),
              messages_call("claude", system=own))  # fmt: skip
    assert marks(claude.requests[-1]) == ["system"]  # the client's one, nothing added


async def test_a_prefix_under_the_minimum_gets_no_breakpoint(tmp_path: Path) -> None:
    claude = FakeAnthropic()
    call = messages_call("claude", system="Be brief.", tools=[{**TOOLS[0], "description": "x"}])
    call.body["messages"] = [call.body["messages"][0], {"role": "assistant", "content": "ok"},
                             call.body["messages"][2]]  # fmt: skip
    await run(tmp_path, claude.app, config("http://claude.test", "anthropic"), call)
    assert marks(claude.requests[-1]) == []


async def test_cache_reads_and_writes_are_priced_as_billed(tmp_path: Path) -> None:
    claude = FakeAnthropic()  # reports 20 uncached, 5 written and 100 read prompt tokens
    record = await run(tmp_path, claude.app, config("http://claude.test", "anthropic"),
                       messages_call("claude"))  # fmt: skip
    usage = record.usage
    assert usage is not None and (usage.input_tokens, usage.cached_tokens) == (125, 100)
    out = usage.output_tokens * 15
    nanos = 1000  # per token at $1 per million
    assert record.money.cost == (20 * 3 + 5 * 3.75 + 100 * 0.3 + out) * nanos
    saved = dict(record.money.savings)["provider_prompt_cache"]
    assert saved == (125 * 3 + out) * nanos - record.money.cost


def chat_call(model: str, **body: Any) -> Call:
    payload = {"model": model, "max_tokens": 5,
               "messages": [{"role": "user", "content": LONG}], **body}  # fmt: skip
    return Call("r", "openai", "chat.completions", model, payload, False, False,
                principal=Principal("k", "k", team="blue"))  # fmt: skip


async def test_openai_gets_the_tenants_prompt_cache_key(tmp_path: Path) -> None:
    fake = FakeUpstream()
    text = config("https://api.openai.com/v1", "openai")
    await run(tmp_path, fake.app, text, chat_call("claude"))
    assert fake.requests[-1]["prompt_cache_key"] == tenant_key("k", "blue", None, "team")
    await run(tmp_path, fake.app, text, chat_call("claude", prompt_cache_key="mine"))
    assert fake.requests[-1]["prompt_cache_key"] == "mine"
    await run(tmp_path, fake.app, text, chat_call("other"))
    assert "prompt_cache_key" not in fake.requests[-1]
    elsewhere = config("http://vllm.internal/v1", "openai")
    await run(tmp_path, fake.app, elsewhere, chat_call("claude"))
    assert "prompt_cache_key" not in fake.requests[-1]  # a server that may refuse it
