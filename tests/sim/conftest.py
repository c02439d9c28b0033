from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import orjson

from gateway.accounting.tokens import TokenCounter
from gateway.backends.asgi import StreamingASGITransport
from gateway.sim.config import SimConfig
from gateway.sim.server import SimServer


def sim_config(
    time_scale: float = 0.0, faults: dict[str, Any] | None = None, **model: Any
) -> SimConfig:
    spec = {"name": "m", "tier": "fp16", **model}
    return SimConfig.model_validate_json(
        orjson.dumps({"time_scale": time_scale, "models": [spec], "faults": faults or {}})
    )


SimFactory = Callable[..., Any]


@asynccontextmanager
async def sim_client(
    config: SimConfig, tokens: TokenCounter
) -> AsyncIterator[tuple[SimServer, httpx.AsyncClient]]:
    server = SimServer(config, tokens)
    async with httpx.AsyncClient(
        transport=StreamingASGITransport(server.app), base_url="http://sim"
    ) as client:
        yield server, client


def chat_body(content: str, max_tokens: int = 4, **extra: Any) -> dict[str, Any]:
    return {
        "model": "m",
        "messages": [{"role": "user", "content": content}],
        "max_tokens": max_tokens,
        **extra,
    }
