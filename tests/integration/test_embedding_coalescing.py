"""Embedding coalescing through the gateway, with the official SDK: concurrent calls to the
simulator's embedding model (coalesced by default: a local engine) each get exactly the
vectors a call of their own gets, and are billed for their own inputs."""

from __future__ import annotations

import asyncio
from pathlib import Path

import openai

from tests.support.asgi import in_process

KEY = "tg-coalesce-key-0123456789"
CONFIG = """
version: 1
server: {reload_poll_seconds: 0}
auth:
  keys: [{name: tester, key_env: TG_KEY}]
backends:
  gpu:
    type: sim
    time_scale: 1
    coalesce_embeddings: COALESCE
    models: [{name: e, kind: embedding, prefill_ms_per_token: 2, input_price_per_mtok: 1}]
models:
  emb: {backend: gpu, model: e}
"""
TEXTS = [[f"sentence number {i} about topic {i % 3}", f"another {i}"] for i in range(8)]


async def _embed_all(tmp: Path, setting: str) -> tuple[list[tuple[list[list[float]], int]], int]:
    """Each caller's vectors and usage, and how many upstream calls carried several callers."""
    config = tmp / f"{setting.replace(' ', '')[:8]}.yaml"
    config.write_text(CONFIG.replace("COALESCE", setting))
    async with in_process(config, tmp, {"TG_KEY": KEY}) as gw:
        client = openai.AsyncOpenAI(base_url=gw.base_url, api_key=KEY, http_client=gw.client,
                                    max_retries=0)  # fmt: skip
        replies = await asyncio.gather(
            *(client.embeddings.create(model="emb", input=t) for t in TEXTS)
        )
        merged = gw.services.runtime.current.backends["gpu"].coalesced
        return [([d.embedding for d in r.data], r.usage.prompt_tokens) for r in replies], merged


async def test_merged_calls_get_their_own_vectors_and_usage(tmp_path: Path) -> None:
    merged, calls = await _embed_all(tmp_path, "{window_ms: 20}")
    alone, none = await _embed_all(tmp_path, "false")
    assert calls >= 1 and none == 0, "concurrent calls went upstream together"
    assert [vectors for vectors, _ in merged] == [vectors for vectors, _ in alone]
    assert sum(used for _, used in merged) == sum(used for _, used in alone)
    assert all(used > 0 for (used,) in ((u,) for _, u in merged))
