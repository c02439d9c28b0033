"""Stored Responses API responses, per key: what `GET /v1/responses/{id}`, `input_items` and a
`previous_response_id` read. Synchronous: callers run these in a worker thread.

A response is only ever found by the key that created it: asked for by another key (or after
its retention ended) it does not exist, so one tenant can never read or continue another's
conversation by guessing an id.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, delete, insert, select

from gateway.stores.sql import responses


@dataclass(frozen=True, slots=True)
class StoredResponse:
    id: str
    key_id: str
    created_at: float
    expires_at: float
    model: str
    response: dict[str, Any]
    input_items: list[dict[str, Any]]
    # Every item of the conversation so far (earlier turns, this input, this output): what
    # the next turn's `previous_response_id` puts before its own input.
    conversation: list[dict[str, Any]]


def save(engine: Engine, stored: StoredResponse) -> None:
    with engine.begin() as conn:
        conn.execute(
            insert(responses).values(
                id=stored.id,
                key_id=stored.key_id,
                created_at=stored.created_at,
                expires_at=stored.expires_at,
                model=stored.model,
                response=json.dumps(stored.response),
                input_items=json.dumps(stored.input_items),
                conversation=json.dumps(stored.conversation),
            )
        )


def load(engine: Engine, ident: str, key_id: str, now: float) -> StoredResponse | None:
    """The response if this key created it and it is still kept."""
    with engine.connect() as conn:
        row = (
            conn.execute(
                select(responses).where(responses.c.id == ident, responses.c.key_id == key_id)
            )
            .mappings()
            .first()
        )
    if row is None or row["expires_at"] <= now:
        return None
    return StoredResponse(
        id=row["id"],
        key_id=row["key_id"],
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        model=row["model"],
        response=json.loads(row["response"]),
        input_items=json.loads(row["input_items"]),
        conversation=json.loads(row["conversation"]),
    )


def remove(engine: Engine, ident: str, key_id: str) -> bool:
    with engine.begin() as conn:
        done = conn.execute(
            delete(responses).where(responses.c.id == ident, responses.c.key_id == key_id)
        )
    return bool(done.rowcount)


def prune(engine: Engine, now: float) -> int:
    """Deletes responses whose retention has ended; how many."""
    with engine.begin() as conn:
        done = conn.execute(delete(responses).where(responses.c.expires_at <= now))
    return int(done.rowcount or 0)
