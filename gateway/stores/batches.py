"""Batch files, jobs and lines in SQL. Synchronous: callers run these in a worker thread.

One gateway at a time owns a job (a lease it renews); a line is taken (`pending` -> `running`)
and finished (`running` -> a final status) by conditional updates that name the owner, so a
line's result is written exactly once even if a gateway that lost its lease is still working.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, Row, and_, delete, func, insert, or_, select, update

from gateway.stores.sql import batch_lines, batches, files

FINAL = ("completed", "failed", "expired", "cancelled")
LINE_FINAL = ("succeeded", "errored", "cancelled", "expired")


@dataclass(frozen=True, slots=True)
class FileRow:
    id: str
    key_id: str
    purpose: str
    filename: str
    size: int
    created_at: float
    content: bytes = b""


@dataclass(frozen=True, slots=True)
class LineRow:
    line: int
    custom_id: str
    body: dict[str, Any]
    worst_nanousd: int
    worst_tokens: int
    status: str = "pending"
    result: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class BatchRow:
    id: str
    key_id: str
    principal: dict[str, Any]
    dialect: str
    endpoint: str
    input_file_id: str | None
    status: str
    created_at: float
    expires_at: float
    times: dict[str, float]
    metadata: dict[str, Any] | None
    errors: list[dict[str, Any]] | None
    total: int
    # The budget counters reserved at submit: [key, unit, amount, ttl] each.
    reservation: list[list[Any]]
    placement: str = ""
    output_file_id: str | None = None
    error_file_id: str | None = None
    owner: str | None = None
    lease_until: float = 0.0
    counts: dict[str, int] = field(default_factory=dict)  # lines by status (when asked for)


# -- files ------------------------------------------------------------------------------


def add_file(engine: Engine, row: FileRow) -> None:
    with engine.begin() as conn:
        conn.execute(insert(files).values(**_file_values(row)))


def _file_values(row: FileRow) -> dict[str, Any]:
    return {"id": row.id, "key_id": row.key_id, "purpose": row.purpose,
            "filename": row.filename, "bytes": row.size, "created_at": row.created_at,
            "content": row.content}  # fmt: skip


def get_file(engine: Engine, ident: str, key_id: str, content: bool = False) -> FileRow | None:
    columns = [c for c in files.c if content or c.name != "content"]
    with engine.connect() as conn:
        row = conn.execute(
            select(*columns).where(files.c.id == ident, files.c.key_id == key_id)
        ).first()
    if row is None:
        return None
    m = row._mapping
    return FileRow(m["id"], m["key_id"], m["purpose"], m["filename"], m["bytes"],
                   m["created_at"], bytes(m["content"]) if content else b"")  # fmt: skip


def list_files(engine: Engine, key_id: str, purpose: str | None, limit: int) -> list[FileRow]:
    columns = [c for c in files.c if c.name != "content"]
    query = select(*columns).where(files.c.key_id == key_id)
    if purpose is not None:
        query = query.where(files.c.purpose == purpose)
    with engine.connect() as conn:
        rows = conn.execute(query.order_by(files.c.created_at.desc()).limit(limit)).all()
    return [FileRow(r.id, r.key_id, r.purpose, r.filename, r.bytes, r.created_at) for r in rows]


def delete_file(engine: Engine, ident: str, key_id: str) -> bool:
    with engine.begin() as conn:
        done = conn.execute(delete(files).where(files.c.id == ident, files.c.key_id == key_id))
    return bool(done.rowcount)


# -- jobs -------------------------------------------------------------------------------


def create_batch(engine: Engine, row: BatchRow, lines: Sequence[LineRow]) -> None:
    """The job and all its lines, in one transaction."""
    with engine.begin() as conn:
        conn.execute(insert(batches).values(
            id=row.id, key_id=row.key_id, principal=json.dumps(row.principal),
            dialect=row.dialect, endpoint=row.endpoint, input_file_id=row.input_file_id,
            status=row.status, created_at=row.created_at, expires_at=row.expires_at,
            times=json.dumps(row.times), metadata=json.dumps(row.metadata),
            errors=json.dumps(row.errors) if row.errors is not None else None,
            total=row.total, reservation=json.dumps(row.reservation),
            placement=row.placement, lease_until=0.0,
        ))  # fmt: skip
        if lines:
            conn.execute(insert(batch_lines), [
                {"batch_id": row.id, "line": ln.line, "custom_id": ln.custom_id,
                 "body": json.dumps(ln.body), "worst_nanousd": ln.worst_nanousd,
                 "worst_tokens": ln.worst_tokens, "status": ln.status,
                 "result": json.dumps(ln.result) if ln.result is not None else None}
                for ln in lines
            ])  # fmt: skip


def get_batch(engine: Engine, ident: str, key_id: str | None = None) -> BatchRow | None:
    """The job (only if `key_id` made it, when given), with its lines counted by status."""
    query = select(batches).where(batches.c.id == ident)
    if key_id is not None:
        query = query.where(batches.c.key_id == key_id)
    with engine.connect() as conn:
        row = conn.execute(query).first()
        if row is None:
            return None
        counts: dict[Any, Any] = dict(conn.execute(
            select(batch_lines.c.status, func.count())
            .where(batch_lines.c.batch_id == ident)
            .group_by(batch_lines.c.status)
        ).all())  # fmt: skip
    return _batch(row, {str(k): int(v) for k, v in counts.items()})


def list_batches(
    engine: Engine, key_id: str, dialect: str, limit: int, after: str | None
) -> tuple[list[BatchRow], bool]:
    """The key's jobs of one API, newest first, after the job `after`; and whether more."""
    query = select(batches).where(batches.c.key_id == key_id, batches.c.dialect == dialect)
    with engine.connect() as conn:
        if after is not None:
            start = conn.execute(select(batches.c.created_at).where(batches.c.id == after)).scalar()
            if start is not None:
                query = query.where(
                    or_(batches.c.created_at < start,
                        and_(batches.c.created_at == start, batches.c.id < after))
                )  # fmt: skip
        rows = conn.execute(
            query.order_by(batches.c.created_at.desc(), batches.c.id.desc()).limit(limit + 1)
        ).all()
    return [_batch(r) for r in rows[:limit]], len(rows) > limit


def _batch(row: Row[Any], counts: dict[str, int] | None = None) -> BatchRow:
    m = row._mapping
    return BatchRow(
        id=m["id"], key_id=m["key_id"], principal=json.loads(m["principal"]),
        dialect=m["dialect"], endpoint=m["endpoint"], input_file_id=m["input_file_id"],
        status=m["status"], created_at=m["created_at"], expires_at=m["expires_at"],
        times=json.loads(m["times"]), metadata=json.loads(m["metadata"] or "null"),
        errors=json.loads(m["errors"]) if m["errors"] else None,
        total=m["total"], reservation=json.loads(m["reservation"]),
        placement=m["placement"] or "", output_file_id=m["output_file_id"],
        error_file_id=m["error_file_id"], owner=m["owner"], lease_until=m["lease_until"],
        counts=counts or {},
    )  # fmt: skip


def set_status(
    engine: Engine,
    ident: str,
    status: str,
    now: float,
    *,
    only_from: Sequence[str],
    **extra: Any,
) -> bool:
    """Moves the job to `status` if it is in one of `only_from` (and records when)."""
    with engine.begin() as conn:
        row = conn.execute(
            select(batches.c.times).where(batches.c.id == ident, batches.c.status.in_(only_from))
        ).first()
        if row is None:
            return False
        times = {**json.loads(row.times), status: now}
        done = conn.execute(
            update(batches)
            .where(batches.c.id == ident, batches.c.status.in_(only_from))
            .values(status=status, times=json.dumps(times), **extra)
        )
    return bool(done.rowcount)


def claim(engine: Engine, owner: str, now: float, lease_s: float, limit: int) -> list[str]:
    """Jobs to run that no live gateway owns (or this one does), taken or renewed."""
    running = ("in_progress", "cancelling", "finalizing")
    free = or_(batches.c.owner.is_(None), batches.c.owner == owner, batches.c.lease_until < now)
    with engine.connect() as conn:
        ids = conn.execute(
            select(batches.c.id).where(batches.c.status.in_(running), free)
            .order_by(batches.c.expires_at).limit(limit)
        ).scalars().all()  # fmt: skip
    taken = []
    for ident in ids:
        with engine.begin() as conn:
            done = conn.execute(
                update(batches).where(batches.c.id == ident, free)
                .values(owner=owner, lease_until=now + lease_s)
            )  # fmt: skip
        if done.rowcount:
            taken.append(ident)
    return taken


def renew(engine: Engine, ident: str, owner: str, now: float, lease_s: float) -> bool:
    with engine.begin() as conn:
        done = conn.execute(
            update(batches).where(batches.c.id == ident, batches.c.owner == owner)
            .values(lease_until=now + lease_s)
        )  # fmt: skip
    return bool(done.rowcount)


def release_orphans(engine: Engine, ident: str, owner: str) -> int:
    """Lines another (dead) owner had taken go back to pending: they never finished."""
    with engine.begin() as conn:
        done = conn.execute(
            update(batch_lines)
            .where(batch_lines.c.batch_id == ident, batch_lines.c.status == "running",
                   or_(batch_lines.c.owner.is_(None), batch_lines.c.owner != owner))
            .values(status="pending", owner=None)
        )  # fmt: skip
    return int(done.rowcount or 0)


def finish_line(
    engine: Engine,
    ident: str,
    line: int,
    owner: str,
    status: str,
    result: dict[str, Any],
    now: float,
) -> bool:
    """Writes a line's result once: only while `owner` holds it running."""
    with engine.begin() as conn:
        done = conn.execute(
            update(batch_lines)
            .where(batch_lines.c.batch_id == ident, batch_lines.c.line == line,
                   batch_lines.c.status == "running", batch_lines.c.owner == owner)
            .values(status=status, result=json.dumps(result), finished_at=now)
        )  # fmt: skip
    return bool(done.rowcount)


def close_pending(engine: Engine, ident: str, status: str, now: float) -> list[LineRow]:
    """Pending lines end unrun (`cancelled`, `expired`): the ones closed now."""
    with engine.begin() as conn:
        rows = conn.execute(
            select(batch_lines).where(batch_lines.c.batch_id == ident,
                                      batch_lines.c.status == "pending")
        ).all()  # fmt: skip
        conn.execute(
            update(batch_lines)
            .where(batch_lines.c.batch_id == ident, batch_lines.c.status == "pending")
            .values(status=status, finished_at=now)
        )  # fmt: skip
    return [LineRow(r.line, r.custom_id, json.loads(r.body), r.worst_nanousd, r.worst_tokens,
                    status) for r in rows]  # fmt: skip


def results(engine: Engine, ident: str) -> list[LineRow]:
    """Every line with its status and result, in input order (bodies left out)."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(batch_lines.c.line, batch_lines.c.custom_id, batch_lines.c.status,
                   batch_lines.c.result, batch_lines.c.worst_nanousd,
                   batch_lines.c.worst_tokens)
            .where(batch_lines.c.batch_id == ident).order_by(batch_lines.c.line)
        ).all()  # fmt: skip
    return [LineRow(r.line, r.custom_id, {}, r.worst_nanousd, r.worst_tokens, r.status,
                    json.loads(r.result) if r.result else None) for r in rows]  # fmt: skip


def finalize(
    engine: Engine,
    ident: str,
    owner: str,
    status: str,
    now: float,
    output: FileRow | None,
    errors: FileRow | None,
) -> bool:
    """The job's end, with its result files, in one transaction (only by its owner, once)."""
    with engine.begin() as conn:
        row = conn.execute(
            select(batches.c.times).where(batches.c.id == ident, batches.c.owner == owner,
                                          batches.c.status.not_in(FINAL))
        ).first()  # fmt: skip
        if row is None:
            return False
        for made in (output, errors):
            if made is not None:
                conn.execute(insert(files).values(**_file_values(made)))
        times = {**json.loads(row.times), status: now}
        conn.execute(
            update(batches).where(batches.c.id == ident)
            .values(status=status, times=json.dumps(times), owner=None, lease_until=0.0,
                    output_file_id=output.id if output else None,
                    error_file_id=errors.id if errors else None)
        )  # fmt: skip
    return True


def peek_pending(engine: Engine, ident: str, n: int) -> list[tuple[int, str]]:
    """Up to `n` pending lines' numbers and models, in order (not taken)."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(batch_lines.c.line, batch_lines.c.body)
            .where(batch_lines.c.batch_id == ident, batch_lines.c.status == "pending")
            .order_by(batch_lines.c.line).limit(n)
        ).all()  # fmt: skip
    return [(r.line, str(json.loads(r.body).get("model"))) for r in rows]


def take_line(engine: Engine, ident: str, line: int, owner: str) -> LineRow | None:
    """The line, marked running for `owner`, if it was still pending."""
    with engine.begin() as conn:
        done = conn.execute(
            update(batch_lines)
            .where(batch_lines.c.batch_id == ident, batch_lines.c.line == line,
                   batch_lines.c.status == "pending")
            .values(status="running", owner=owner)
        )  # fmt: skip
        if not done.rowcount:
            return None
        r = conn.execute(
            select(batch_lines).where(batch_lines.c.batch_id == ident, batch_lines.c.line == line)
        ).one()
    return LineRow(r.line, r.custom_id, json.loads(r.body), r.worst_nanousd, r.worst_tokens,
                   "running")  # fmt: skip


def set_placement(engine: Engine, ident: str, why: str) -> None:
    with engine.begin() as conn:
        conn.execute(update(batches).where(batches.c.id == ident).values(placement=why))
