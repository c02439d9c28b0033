"""Liveness and readiness probes."""

from __future__ import annotations

import orjson
from starlette.requests import Request
from starlette.responses import Response

from gateway.services import Services


async def healthz(request: Request) -> Response:
    """Alive: the process answers. Says nothing about dependencies on purpose."""
    return Response(b'{"status":"ok"}', media_type="application/json")


async def readyz(request: Request) -> Response:
    """Ready: a config is loaded and serving. (Stores join this check as they land.)"""
    services: Services | None = getattr(request.state, "services", None)
    if services is None:
        return Response(b'{"status":"starting"}', 503, media_type="application/json")
    runtime = services.runtime.current
    body = orjson.dumps(
        {
            "status": "ready",
            "config_generation": runtime.generation,
            "models": runtime.router.aliases(),
        }
    )
    return Response(body, media_type="application/json")
