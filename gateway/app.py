"""create_app: the route table, the lifespan that builds and closes Services. Nothing at import."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send

from gateway.accounting.tokens import TokenCounter
from gateway.api.admin import admin_routes
from gateway.api.anthropic import MessagesEndpoint
from gateway.api.batches import batch_routes
from gateway.api.dashboard import dashboard_routes
from gateway.api.errors import openai_error_body
from gateway.api.health import healthz, readyz
from gateway.api.load import Load
from gateway.api.metrics import metrics
from gateway.api.models import ModelsEndpoint
from gateway.api.openai import OpenAIEndpoint
from gateway.api.responses import ResponsesEndpoint
from gateway.api.stored_responses import stored_response_routes
from gateway.config.loader import LoadedConfig
from gateway.errors import InvalidRequest, TollgateError
from gateway.services import Services
from gateway.settings import Settings

log = logging.getLogger("gateway.app")


def create_app(
    settings: Settings, loaded: LoadedConfig, tokens: TokenCounter | None = None
) -> HotPaths:
    load = Load()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        services = await Services.start(settings, loaded, tokens)
        # Start-up objects move out of the collector's way, and young-generation collections
        # run every 20,000 net allocations instead of 700: under load GC time fell from ~46 us
        # to ~4 us per request (docs/benchmarks.md "Where the time goes"; almost everything a
        # call allocates is freed by reference counting long before a collection).
        gc.collect()
        gc.freeze()
        gc.set_threshold(20_000, 10, 10)
        try:
            yield {"services": services, "load": load}
        finally:
            await services.aclose()

    models = ModelsEndpoint()
    routes = [
        Route("/v1/chat/completions", OpenAIEndpoint("chat.completions"), methods=["POST"]),
        Route("/v1/completions", OpenAIEndpoint("completions"), methods=["POST"]),
        Route("/v1/embeddings", OpenAIEndpoint("embeddings"), methods=["POST"]),
        Route("/v1/messages", MessagesEndpoint(), methods=["POST"]),
        Route("/v1/messages/count_tokens", MessagesEndpoint(count=True), methods=["POST"]),
        Route("/v1/responses", ResponsesEndpoint(), methods=["POST"]),
        *stored_response_routes(),
        *batch_routes(),
        Route("/v1/models", models, methods=["GET"]),
        Route("/v1/models/{model_id:path}", models, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        *admin_routes(),
        *dashboard_routes(),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    # No slash-redirects: they are built from the client's Host header (a redirect anywhere
    # the client names) and every path here is exact.
    app.router.redirect_slashes = False
    app.add_exception_handler(404, _not_found)
    app.add_exception_handler(405, _not_allowed)
    app.add_exception_handler(Exception, _unhandled)
    hot = {route.path: route.app for route in routes[:6]}
    return HotPaths(app, hot, load)


class HotPaths:
    """Sends the proxied POST endpoints straight to their handler, past Starlette's middleware
    and router (~10% of a fast call: docs/benchmarks.md "Where the time goes"); everything else
    goes through Starlette.
    The handlers render every error themselves, so nothing is lost by the shortcut."""

    def __init__(self, app: Starlette, hot: dict[str, Any], load: Load) -> None:
        self.app = app
        self._hot = hot
        self._load = load

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["method"] == "POST":
            handler = self._hot.get(scope["path"])
            if handler is not None:
                load = self._load
                load.in_flight += 1
                try:
                    await handler(scope, receive, send)
                finally:
                    load.in_flight -= 1
                return
        services = scope.get("state", {}).get("services")
        if services is None or scope["path"].startswith("/v1/models"):
            await self.app(scope, receive, send)  # the models endpoint stamps its own id
            return
        request_id = services.request_ids().encode()

        async def stamped(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [*message.get("headers", []), (b"x-tollgate-request-id", request_id)]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, stamped)


async def _json_error(err: TollgateError) -> Response:
    return Response(
        openai_error_body(err),
        status_code=err.status,
        media_type="application/json",
        headers=dict(err.headers),
    )


async def _not_found(request: Request, exc: Exception) -> Response:
    return await _json_error(
        InvalidRequest(
            f"Invalid URL ({request.method} {request.url.path})", status=404, code="not_found"
        )
    )


async def _not_allowed(request: Request, exc: Exception) -> Response:
    return await _json_error(
        InvalidRequest(
            f"Method {request.method} not allowed for {request.url.path}",
            status=405,
            code="method_not_allowed",
        )
    )


async def _unhandled(request: Request, exc: Exception) -> Response:
    log.error("unhandled error", exc_info=exc)
    return await _json_error(TollgateError("Internal error in the gateway.", code="internal_error"))
