"""Liveness and readiness probes."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import orjson
from starlette.requests import Request
from starlette.responses import Response

from gateway.routing.state import ReplicaState
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
    audit = services.audit.status() if services.audit is not None else None
    # A full journal refuses calls; a database outage alone is absorbed by the journal.
    audit_ok = audit is None or audit.accepting
    body = orjson.dumps(
        {
            "status": "ready"
            if ready and audit_ok
            else ("store_unreachable" if not ready else "audit_journal_full"),
            "config_generation": runtime.generation,
            "models": runtime.router.aliases(),
            "counter_store": {
                "kind": services.ledger.store.name,
                "status": store,
                "on_store_failure": services.ledger.on_failure,
                **dataclasses.asdict(services.ledger.snapshot()),
            },
            # Keys and budgets keep being served from memory while SQL is away: reported, not
            # a reason to take the gateway out of rotation.
            "database": "unreachable" if services.accounts.failing else "ok",
            "audit": dataclasses.asdict(audit) if audit is not None else None,
            # Each alias's tiers and replicas: circuit, load, latency (docs/routing.md).
            "replicas": replicas_public(runtime.router.replicas_by_tier()),
        }
    )
    return Response(body, 200 if ready and audit_ok else 503, media_type="application/json")


def replicas_public(
    tiers: Mapping[str, Mapping[str, Sequence[ReplicaState]]],
) -> dict[str, dict[str, list[dict[str, object]]]]:
    """The replicas' state as /readyz and GET /admin/replicas render it."""
    return {alias: {tier: [s.public() for s in states] for tier, states in by_tier.items()}
            for alias, by_tier in tiers.items()}  # fmt: skip
