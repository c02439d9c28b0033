"""Submitting and cancelling a job, shared by OpenAI's Batch API and Anthropic's Message
Batches: its input checked, its worst case reserved against the key's budgets (refused up
front, naming the budget, if it does not fit), its lines stored for any gateway to run."""

from __future__ import annotations

import asyncio
import re
import secrets
import time
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Engine

from gateway.accounting.ledger import Denial, StoreDown
from gateway.batches.lines import URLS, Problem, Request, anthropic_requests, openai_lines
from gateway.batches.money import guard_of, plan, refusal, reserve, worst_case
from gateway.call import Dialect, Endpoint, Principal
from gateway.errors import InvalidRequest, PolicyDenied, ServiceUnavailable
from gateway.runtime import Runtime
from gateway.stores import batches as store
from gateway.stores.batches import BatchRow, LineRow

_WINDOW = re.compile(r"^(\d{1,4})h$")


def principal_data(principal: Principal) -> dict[str, Any]:
    models = sorted(principal.models) if principal.models is not None else None
    return {"key_id": principal.key_id, "name": principal.name, "user": principal.user,
            "team": principal.team, "org": principal.org, "tags": list(principal.tags),
            "models": models}  # fmt: skip


def window_seconds(window: Any, most_hours: int) -> int:
    found = _WINDOW.match(window) if isinstance(window, str) else None
    if found is None or not 1 <= int(found.group(1)) <= most_hours:
        raise InvalidRequest(
            f"completion_window must be a number of hours from 1h to {most_hours}h, such as '24h'.",
            param="completion_window",
        )
    return int(found.group(1)) * 3600


async def submit_openai(
    engine: Engine, runtime: Runtime, principal: Principal, body: dict[str, Any]
) -> BatchRow:
    settings = runtime.config.batch
    url = body.get("endpoint")
    if url not in URLS:
        raise InvalidRequest(f"endpoint must be one of: {', '.join(URLS)}.", param="endpoint")
    window = window_seconds(body.get("completion_window"), settings.max_window_hours)
    ident = body.get("input_file_id")
    if not isinstance(ident, str):
        raise InvalidRequest("Missing required parameter: 'input_file_id'.",
                             param="input_file_id")  # fmt: skip
    metadata = body.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise InvalidRequest("'metadata' must be an object.", param="metadata")
    found = await asyncio.to_thread(store.get_file, engine, ident, principal.key_id, True)
    if found is None:
        raise InvalidRequest(f"No such File object: {ident}", param="input_file_id",
                             status=404, code="not_found")  # fmt: skip
    if found.purpose != "batch":
        raise InvalidRequest(f"File {ident} has purpose '{found.purpose}', not 'batch'.",
                             param="input_file_id")  # fmt: skip
    requests, problems = openai_lines(found.content, str(url), settings.max_lines)
    if problems:
        return await _failed(engine, principal, URLS[str(url)], ident, window, metadata,
                             problems)  # fmt: skip
    return await _create(engine, runtime, principal, "openai", URLS[str(url)], requests,
                         window, ident, metadata)  # fmt: skip


async def submit_anthropic(
    engine: Engine, runtime: Runtime, principal: Principal, body: dict[str, Any]
) -> BatchRow:
    requests, problems = anthropic_requests(body.get("requests"), runtime.config.batch.max_lines)
    if problems:
        raise InvalidRequest(problems[0].message, param=problems[0].param)
    return await _create(engine, runtime, principal, "anthropic", "messages", requests,
                         24 * 3600, None, None)  # fmt: skip


async def _failed(
    engine: Engine,
    principal: Principal,
    endpoint: Endpoint,
    file_id: str,
    window: int,
    metadata: dict[str, Any] | None,
    problems: list[Problem],
) -> BatchRow:
    """A file that cannot be run fails as a whole at validation, every problem listed."""
    now = time.time()
    job = BatchRow(
        id="batch_" + secrets.token_hex(12), key_id=principal.key_id,
        principal=principal_data(principal), dialect="openai", endpoint=endpoint,
        input_file_id=file_id, status="failed", created_at=now, expires_at=now + window,
        times={"validating": now, "failed": now}, metadata=metadata,
        errors=[p.public() for p in problems], total=0, reservation=[],
    )  # fmt: skip
    await asyncio.to_thread(store.create_batch, engine, job, [])
    return job


async def _create(
    engine: Engine,
    runtime: Runtime,
    principal: Principal,
    dialect: Dialect,
    endpoint: Endpoint,
    requests: Sequence[Request],
    window: int,
    file_id: str | None,
    metadata: dict[str, Any] | None,
) -> BatchRow:
    lines = []
    for i, request in enumerate(requests):
        usd, tokens = worst_case(runtime, principal, dialect, endpoint, request.body)
        lines.append(LineRow(i, request.custom_id, request.body, usd, tokens))
    charges, record = plan(
        runtime, principal, ((str(ln.body.get("model")), ln.worst_nanousd, ln.worst_tokens)
                             for ln in lines)
    )  # fmt: skip
    if charges:
        await _reserve(runtime, charges)
    now = time.time()
    aliases = sorted({str(ln.body.get("model")) for ln in lines})
    job = BatchRow(
        id=("batch_" if dialect == "openai" else "msgbatch_") + secrets.token_hex(12),
        key_id=principal.key_id, principal=principal_data(principal), dialect=dialect,
        endpoint=endpoint, input_file_id=file_id, status="in_progress", created_at=now,
        expires_at=now + window, times={"validating": now, "in_progress": now},
        metadata=metadata, errors=None, total=len(lines), reservation=record,
        placement=(f"local: spare capacity of {', '.join(aliases)} (a line starts while a "
                   "replica has room); the standard tier near the end of its window"),
    )  # fmt: skip
    try:
        await asyncio.to_thread(store.create_batch, engine, job, lines)
    except BaseException:
        ledger = guard_of(runtime).limits.ledger
        ledger.settle_reserved([(k, amount, 0, ttl) for k, _, amount, ttl, _ in record], None)
        raise
    return job


async def _reserve(runtime: Runtime, charges: list[Any]) -> None:
    try:
        result = await reserve(runtime, charges)
    except StoreDown as exc:
        raise ServiceUnavailable(
            f"Budgets cannot be checked: {exc}. Retry shortly.",
            code="budget_store_unavailable", headers={"retry-after": "1"},
        ) from exc  # fmt: skip
    if isinstance(result, Denial):
        denied = PolicyDenied(
            "This batch cannot fit its budget: " + refusal(runtime, result),
            status=guard_of(runtime).limits.budget_status, code="budget_exceeded",
            headers={"x-should-retry": "false"},
        )  # fmt: skip
        denied.error_type = "insufficient_quota"
        raise denied


async def cancel(engine: Engine, ident: str, key_id: str) -> BatchRow | None:
    """Asks the job's owner to stop: in-flight lines finish, the rest end unrun."""
    job = await asyncio.to_thread(store.get_batch, engine, ident, key_id)
    if job is None:
        return None
    if job.status in ("validating", "in_progress"):
        await asyncio.to_thread(store.set_status, engine, ident, "cancelling", time.time(),
                                only_from=("validating", "in_progress"))  # fmt: skip
    elif job.status not in ("cancelling", "cancelled"):
        raise InvalidRequest(f"Cannot cancel a batch with status '{job.status}'.",
                             status=409, code="conflict")  # fmt: skip
    return await asyncio.to_thread(store.get_batch, engine, ident, key_id)
