"""The simulator as a backend: its HTTP app served in-process through a streaming ASGI transport,
spoken to by the same OpenAI-compatible adapter a real vLLM gets."""

from __future__ import annotations

import httpx

from gateway.accounting.tokens import TokenCounter
from gateway.backends.asgi import StreamingASGITransport
from gateway.backends.base import Capabilities
from gateway.backends.openai_compat import OpenAICompatBackend
from gateway.sim.config import SimConfig
from gateway.sim.server import SimServer


class SimBackend(OpenAICompatBackend):
    def __init__(
        self,
        name: str,
        config: SimConfig,
        *,
        tokens: TokenCounter,
        timeout: httpx.Timeout,
        total_timeout: float,
        capabilities: Capabilities,
        coalesce: tuple[float, int] | None = None,
    ) -> None:
        self.server = SimServer(config, tokens)
        self._own_transport = StreamingASGITransport(self.server.app)
        super().__init__(
            name,
            transport=self._own_transport,
            base_url=f"http://sim.{name}/v1",
            tokens=tokens,
            timeout=timeout,
            total_timeout=total_timeout,
            max_connections=1_000_000,
            capabilities=capabilities,
            coalesce=coalesce,
        )

    async def aclose(self) -> None:
        await self._own_transport.aclose()
