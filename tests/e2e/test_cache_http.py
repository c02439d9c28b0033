"""The response cache as users meet it, through the official SDKs: an answer stored from one
dialect is replayed to the other, whole and streamed (with the usage chunk when asked); two
gateways sharing Redis answer from each other's entries, exact and semantic; /metrics shows it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import anthropic
import httpx
import openai
import pytest

from tests.support.servers import GatewayProcess
from tests.support.services import REDIS_URL, cache_prefix
from tests.support.wait import polled

KEY = "tg-cache-key"
MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]


def write_config(tmp: Path, store: str) -> Path:
    config = tmp / f"tollgate-{uuid.uuid4().hex[:6]}.yaml"
    config.write_text(f"""
version: 1
server: {{reload_poll_seconds: 0}}
auth:
  keys: [{{name: tester, key_env: TG_KEY, team: qa}}]
cache: {store}
backends:
  gpu: {{type: sim, time_scale: 0, models: [{{name: m, default_max_tokens: 12}}]}}
  emb: {{type: sim, time_scale: 0, models: [{{name: e, kind: embedding, embedding: lexical}}]}}
models:
  chat:
    backend: gpu
    model: m
    cache: {{mode: semantic, semantic: {{embedding_model: embed, threshold: 0.6}}}}
  embed: {{backend: emb, model: e}}
""")
    return config


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    config = write_config(tmp_path_factory.mktemp("cache"), "{store: memory}")
    with GatewayProcess(config, env={"TG_KEY": KEY}) as gw:
        yield gw


def openai_client(gw: GatewayProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key=KEY, max_retries=0)


def clients(gw: GatewayProcess) -> tuple[openai.OpenAI, anthropic.Anthropic]:
    return openai_client(gw), anthropic.Anthropic(base_url=gw.url, api_key=KEY, max_retries=0)


def test_an_openai_answer_is_replayed_to_an_anthropic_stream(gateway: GatewayProcess) -> None:
    oa, an = clients(gateway)
    messages = [{"role": "user", "content": "Name three rivers in Europe."}]
    first = oa.chat.completions.with_raw_response.create(
        model="chat",
        messages=messages,
        temperature=0,
        max_tokens=12,  # type: ignore[arg-type]
    )
    assert first.headers["x-tollgate-cache"] == "miss"
    text = first.parse().choices[0].message.content
    with an.messages.with_streaming_response.create(
        model="chat", max_tokens=12, messages=messages, stream=True,  # type: ignore[arg-type]
        extra_body={"temperature": 0},
    ) as streamed:  # fmt: skip
        assert streamed.headers["x-tollgate-cache"] == "exact"
        events = list(streamed.parse())
    kinds = [e.type for e in events]
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    replayed = "".join(e.delta.text for e in events if e.type == "content_block_delta")  # type: ignore[union-attr]
    assert replayed == text
    whole = an.messages.with_raw_response.create(
        model="chat", max_tokens=12, messages=messages,  # type: ignore[arg-type]
        extra_body={"temperature": 0},
    )  # fmt: skip
    assert whole.headers["x-tollgate-cache"] == "exact"
    assert whole.parse().content[0].text == text  # type: ignore[union-attr]


def test_an_anthropic_answer_is_replayed_to_an_openai_stream_with_its_usage(
    gateway: GatewayProcess,
) -> None:
    oa, an = clients(gateway)
    messages = [{"role": "user", "content": "Name three lakes in Canada."}]
    first = an.messages.create(model="chat", max_tokens=12, messages=messages,  # type: ignore[arg-type]
                               extra_body={"temperature": 0})  # fmt: skip
    text = first.content[0].text  # type: ignore[union-attr]
    with oa.chat.completions.with_streaming_response.create(
        model="chat", messages=messages, temperature=0, max_tokens=12, stream=True,  # type: ignore[arg-type]
        stream_options={"include_usage": True},
    ) as streamed:  # fmt: skip
        assert streamed.headers["x-tollgate-cache"] == "exact"
        chunks = list(streamed.parse())
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == text
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.prompt_tokens == first.usage.input_tokens
    assert chunks[-1].usage.completion_tokens == first.usage.output_tokens


def test_a_paraphrase_is_answered_from_cache_with_its_similarity(gateway: GatewayProcess) -> None:
    oa, _ = clients(gateway)
    first = oa.chat.completions.create(model="chat", messages=MESSAGES, temperature=0)  # type: ignore[arg-type]
    again = oa.chat.completions.with_raw_response.create(
        model="chat", temperature=0,
        messages=[{"role": "user", "content": "Tell me the capital city of France."}],
    )  # fmt: skip
    assert again.headers["x-tollgate-cache"] == "semantic"
    assert float(again.headers["x-tollgate-cache-similarity"]) >= 0.6
    assert again.parse().choices[0].message.content == first.choices[0].message.content
    metrics = httpx.get(gateway.url + "/metrics").text
    assert 'tollgate_cache_lookups_total{result="semantic"}' in metrics


def test_two_gateways_sharing_redis_answer_from_each_others_entries(tmp_path: Path) -> None:
    with cache_prefix() as prefix:
        store = (
            f"{{store: redis, redis_url: '{REDIS_URL}', key_prefix: '{prefix}', "
            "sync_seconds: 0.05}"
        )
        config = write_config(tmp_path, store)
        with (
            GatewayProcess(config, env={"TG_KEY": KEY}) as one,
            GatewayProcess(config, env={"TG_KEY": KEY}) as two,
            openai_client(one) as a,
            openai_client(two) as b,
        ):
            asked = a.chat.completions.create(model="chat", messages=MESSAGES, temperature=0)  # type: ignore[arg-type]
            # The answer is stored after the client has it: wait for the first gateway's write.
            polled(lambda: httpx.get(one.url + "/metrics").text,
                   lambda text: "tollgate_cache_stored_total 1.0" in text)  # fmt: skip
            exact = b.chat.completions.with_raw_response.create(
                model="chat",
                messages=MESSAGES,
                temperature=0,  # type: ignore[arg-type]
            )
            assert exact.headers["x-tollgate-cache"] == "exact"
            assert exact.parse().choices[0].message.content == asked.choices[0].message.content
            paraphrase = [{"role": "user", "content": "what's the capital of france"}]

            def ask() -> str:
                reply = b.chat.completions.with_raw_response.create(
                    model="chat", messages=paraphrase, temperature=0,  # type: ignore[arg-type]
                    extra_headers={"cache-control": "no-store"},
                )  # fmt: skip
                return reply.headers["x-tollgate-cache"]

            # The second gateway's index learns the first one's question from the stream.
            assert polled(ask, lambda verdict: verdict == "semantic") == "semantic"
