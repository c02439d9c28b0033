"""The gateway's ASGI app in the test's own process, driven through `httpx.ASGITransport`: for
tests of HTTP shapes (status codes, error bodies, headers) that need the whole app but not a
socket or a subprocess. The app's lifespan runs as a server would run it, so Services start
and close for real; each gateway gets its own SQLite file and audit journal.

    async with in_process(config_path, env={"TG_KEY": "k"}) as gw:
        reply = await gw.client.get("/v1/models", headers=...)
        sdk = openai.AsyncOpenAI(base_url=gw.base_url, api_key="k", http_client=gw.client)

A whole body is collected before the client sees it (httpx's ASGI transport does not stream),
so streaming timing and client disconnects stay with the end-to-end tests.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from starlette.types import Receive, Scope, Send


@dataclass
class InProcess:
    client: httpx.AsyncClient
    base_url: str  # for SDKs: their base_url, with /v1
    services: Any = None  # the running gateway's Services (for what only it can tell)


@contextlib.contextmanager
def _environment(values: Mapping[str, str]) -> Iterator[None]:
    """The gateway reads secrets and overrides from the environment, as a process would."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextlib.asynccontextmanager
async def in_process(
    config: Path, tmp: Path, env: Mapping[str, str] | None = None
) -> AsyncIterator[InProcess]:
    from gateway.app import create_app
    from gateway.config.loader import load_config
    from gateway.settings import Settings

    own = {
        "TOLLGATE_DATABASE_URL": f"sqlite:///{tmp}/tollgate.db",
        "TOLLGATE_AUDIT_DIR": str(tmp / "audit"),
        **(env or {}),
    }
    with _environment(own):
        settings = Settings(config_path=str(config))
        hot = create_app(settings, load_config(config))
        async with hot.app.router.lifespan_context(hot.app) as state:

            async def app(scope: Scope, receive: Receive, send: Send) -> None:
                # What uvicorn does with the lifespan's state: a copy in every request's scope.
                scope["state"] = dict(state or {})
                await hot(scope, receive, send)

            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
                yield InProcess(client, "http://gateway/v1", (state or {}).get("services"))
