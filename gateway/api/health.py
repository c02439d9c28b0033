"""Liveness and readiness probes."""

from __future__ import annotations

import orjson
from starlette.requests import Request
from starlette.responses import Response

from gateway.services import Services
from gateway.stores.counters import StoreUnavailable


async def healthz(request: Request) -> Response:
    """Alive: the process answers. Says nothing about dependencies on purpose."""
    return Response(b'{"status":"ok"}', media_type="application/json")


async def readyz(request: Request) -> Response:
    """Ready: a config is loaded and the counter store answers (or failing open is allowed)."""
    services: Services | None = getattr(request.state, "services", None)
    if services is None:
        return Response(b'{"status":"starting"}', 503, media_type="application/json")
    runtime = services.runtime.current
    store = "ok"
    try:
        await services.ledger.store.ping()
    except StoreUnavailable:
        store = "unreachable"
    # Failing closed, a gateway without its store would deny every budgeted call: not ready.
    ready = store == "ok" or services.ledger.on_failure == "open"
    body = orjson.dumps(
        {
            "status": "ready" if ready else "store_unreachable",
            "config_generation": runtime.generation,
            "models": runtime.router.aliases(),
            "counter_store": {
                "kind": services.ledger.store.name,
                "status": store,
                "on_store_failure": services.ledger.on_failure,
                **services.ledger.snapshot(),
            },
            # Keys and budgets keep being served from memory while SQL is away: reported, not
            # a reason to take the gateway out of rotation.
            "database": "unreachable" if services.accounts.failing else "ok",
        }
    )
    return Response(body, 200 if ready else 503, media_type="application/json")
