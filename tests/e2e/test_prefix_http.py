"""Prefix-aware routing as users meet it: a conversation's turns, through the official SDKs of
both dialects, land on the replica that holds its prefix and come back with cached tokens; the
closed loop shows on /metrics and in the admin API."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import anthropic
import httpx
import openai
import pytest

from tests.support.servers import GatewayProcess
from tests.support.services import cache_prefix
from tests.support.wait import polled

KEY = "tg-prefix-key"
ADMIN = "tg-prefix-admin"
_WORDS = "amber birch cedar dune ember fjord glade heath inlet jetty knoll lagoon"
WORDS = _WORDS.split()


def write_config(tmp: Path) -> Path:
    sims = "\n".join(
        f"  r{i}: {{type: sim, time_scale: 0, models: [{{name: m}}]}}" for i in range(3)
    )
    pool = ", ".join(f"{{backend: r{i}, model: m}}" for i in range(3))
    config = tmp / "tollgate.yaml"
    config.write_text(
        f"""
version: 1
server: {{reload_poll_seconds: 0}}
auth:
  keys: [{{name: tester, key_env: TG_KEY, team: qa}}]
admin: {{key_env: TG_ADMIN}}
backends:
{sims}
models:
  chat: {{tiers: {{fp16: [{pool}]}}, strategy: prefix_aware}}
"""
    )
    return config


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    config = write_config(tmp_path_factory.mktemp("prefix"))
    with GatewayProcess(config, env={"TG_KEY": KEY, "TG_ADMIN": ADMIN}) as gw:
        yield gw


def words(seed: int, count: int) -> str:
    rng = random.Random(seed)
    return " ".join(rng.choice(WORDS) for _ in range(count))


def converse(gateway: GatewayProcess, seed: int) -> tuple[set[str], list[int]]:
    """Four turns of one conversation: the backends that served them, their cached tokens."""
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=KEY, max_retries=0)
    history = [{"role": "system", "content": words(seed, 900)}]
    backends, cached = set(), []
    for turn in range(4):
        history.append({"role": "user", "content": words(seed * 100 + turn, 60)})
        raw = client.chat.completions.with_raw_response.create(
            model="chat",
            messages=history,
            max_tokens=3,  # type: ignore[arg-type]
        )
        backends.add(raw.headers["x-tollgate-backend"])
        reply = raw.parse()
        assert reply.usage and reply.usage.prompt_tokens_details
        cached.append(reply.usage.prompt_tokens_details.cached_tokens or 0)
        history.append({"role": "assistant", "content": reply.choices[0].message.content or ""})
    client.close()
    return backends, cached


def test_a_conversation_stays_where_its_prefix_is_cached(gateway: GatewayProcess) -> None:
    backends, cached = converse(gateway, 1)
    assert len(backends) == 1
    assert cached[0] == 0 and all(c > 900 for c in cached[1:])


def test_an_anthropic_conversation_streams_from_its_replica(gateway: GatewayProcess) -> None:
    client = anthropic.Anthropic(base_url=gateway.url, api_key=KEY, max_retries=0)
    system = words(2, 900)
    messages: list[dict[str, str]] = []
    reads = []
    for turn in range(3):
        messages.append({"role": "user", "content": words(20 + turn, 60)})
        with client.messages.stream(
            model="chat",
            system=system,
            max_tokens=3,
            messages=messages,  # type: ignore[arg-type]
        ) as stream:
            final = stream.get_final_message()
        reads.append(final.usage.cache_read_input_tokens or 0)
        messages.append({"role": "assistant", "content": final.content[0].text or "ok"})  # type: ignore[union-attr]
    client.close()
    assert reads[0] == 0 and all(r > 900 for r in reads[1:])


def test_the_closed_loop_is_on_metrics_and_in_the_admin_api(gateway: GatewayProcess) -> None:
    converse(gateway, 3)
    metrics = httpx.get(gateway.url + "/metrics").text
    assert "tollgate_prefix_predicted_cached_tokens_total{" in metrics
    assert "tollgate_prefix_reported_cached_tokens_total{" in metrics
    assert "tollgate_prefix_index_bytes{" in metrics
    replicas = httpx.get(
        gateway.url + "/admin/replicas", headers={"authorization": f"Bearer {ADMIN}"}
    ).json()
    seen = [r["prefix"] for tier in replicas["replicas"]["chat"].values() for r in tier
            if r["prefix"]]  # fmt: skip
    assert seen and sum(p["reported_cached_tokens"] for p in seen) > 0


def test_two_gateway_processes_send_a_conversation_to_the_same_replica(
    gateway: GatewayProcess, tmp_path: Path
) -> None:
    """Each process has its own index and its own hash seed; they agree without talking."""
    env = {"TG_KEY": KEY, "TG_ADMIN": ADMIN}
    with GatewayProcess(write_config(tmp_path), env=env) as other:
        clients = [openai.OpenAI(base_url=g.url + "/v1", api_key=KEY, max_retries=0)
                   for g in (gateway, other)]  # fmt: skip
        for seed in (40, 41, 42, 43):
            history = [{"role": "system", "content": words(seed, 900)}]
            served = set()
            for turn in range(4):
                history.append({"role": "user", "content": words(seed * 10 + turn, 40)})
                raw = clients[turn % 2].chat.completions.with_raw_response.create(
                    model="chat",
                    messages=history,
                    max_tokens=2,  # type: ignore[arg-type]
                )
                served.add(raw.headers["x-tollgate-backend"])
                history.append({"role": "assistant", "content": "ok"})
            assert len(served) == 1, (seed, served)
        for client in clients:
            client.close()


def test_gateway_processes_sharing_their_index_through_redis(tmp_path: Path) -> None:
    """With `routing.prefix_aware.share`, what one process routed reaches the other's index."""
    env = {"TG_KEY": KEY, "TG_ADMIN": ADMIN}
    with cache_prefix() as prefix:
        share = f"routing: {{prefix_aware: {{share: {{key_prefix: '{prefix}', sync_ms: 20}}}}}}\n"
        (tmp_path / "a").mkdir()
        (tmp_path / "b").mkdir()
        one_config, two_config = write_config(tmp_path / "a"), write_config(tmp_path / "b")
        for config in (one_config, two_config):
            config.write_text(config.read_text() + share)
        with GatewayProcess(one_config, env=env) as one, GatewayProcess(two_config, env=env) as two:
            client = openai.OpenAI(base_url=one.url + "/v1", api_key=KEY, max_retries=0)
            client.chat.completions.create(
                model="chat", max_tokens=2,
                messages=[{"role": "user", "content": words(7, 900)}],  # type: ignore[list-item]
            )  # fmt: skip
            client.close()

            def applied() -> float:
                text = httpx.get(two.url + "/metrics").text
                line = next(
                    x for x in text.splitlines() if x.startswith("tollgate_prefix_share_applied")
                )
                return float(line.split()[-1])

            assert polled(applied, lambda n: n >= 1) >= 1
