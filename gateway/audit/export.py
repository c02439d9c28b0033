"""`tollgate audit export`: events in a time range as CSV or JSON lines, for auditors' tools.

Money in USD (exact decimal strings), times in ISO 8601 UTC, decisions as JSON, booleans as
`true`/`false`, and `verification`: `ok`, or the problem `verify` finds with the row
(`altered`, `inserted`), so a spreadsheet never shows a tampered row as an ordinary one.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import IO, Any

import orjson
from sqlalchemy import Engine, select

from gateway.audit import tables
from gateway.audit.events import from_datetime, to_datetime

_MONEY = tuple(str(c.name) for c in tables.events.columns if c.name.endswith("_nanousd"))
_HIDDEN = {"id", *_MONEY}
COLUMNS = (
    *(str(c.name) for c in tables.events.columns if c.name not in _HIDDEN),
    *(m.removesuffix("_nanousd") + "_usd" for m in _MONEY),
    "decisions",
    "verification",
)
BATCH = 2000


def rows(
    engine: Engine,
    since: datetime | None,
    until: datetime | None,
    team: str | None,
    flagged: Mapping[tuple[str, int], str] | None = None,
) -> Iterator[dict[str, Any]]:
    ev, dec = tables.events, tables.decisions
    where = []
    if since is not None:
        where.append(ev.c.received_at >= since)
    if until is not None:
        where.append(ev.c.received_at < until)
    if team is not None:
        where.append(ev.c.team == team)
    query = select(ev).where(*where).order_by(ev.c.received_at, ev.c.chain_id, ev.c.seq)
    with engine.connect() as conn:
        result = conn.execution_options(yield_per=BATCH).execute(query)
        for chunk in result.partitions():
            keys = {(r.chain_id, r.seq) for r in chunk}
            decided: dict[tuple[str, int], list[dict[str, Any]]] = {}
            chains = {k[0] for k in keys}
            seqs = [k[1] for k in keys]
            found = conn.execute(
                select(dec)
                .where(dec.c.chain_id.in_(chains), dec.c.seq.in_(seqs))
                .order_by(dec.c.seq, dec.c.position)
            )
            for d in found:
                if (d.chain_id, d.seq) in keys:
                    decided.setdefault((d.chain_id, d.seq), []).append(
                        {"plugin": d.plugin, "action": d.action, "reason": d.reason,
                         "enforced": d.enforced}
                    )  # fmt: skip
            for r in chunk:
                record = _record(r._mapping, decided.get((r.chain_id, r.seq), []))
                if flagged is not None:
                    record["verification"] = flagged.get((r.chain_id, r.seq), "ok")
                yield record


def _record(row: Any, decisions: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in row.items():
        name = str(key)  # SQLAlchemy hands out str subclasses; orjson wants plain str keys
        if name == "id":
            continue
        if name in _MONEY:
            out[name.removesuffix("_nanousd") + "_usd"] = format(Decimal(value) / 10**9, "f")
        elif isinstance(value, datetime):
            dt = to_datetime(from_datetime(value))
            out[name] = dt.astimezone(UTC).isoformat() if dt else None
        else:
            out[name] = value
    out["decisions"] = decisions
    return out


def write(records: Iterator[dict[str, Any]], out: IO[str], fmt: str) -> int:
    count = 0
    if fmt == "jsonl":
        for record in records:
            out.write(orjson.dumps(record).decode() + "\n")
            count += 1
        return count
    writer = csv.DictWriter(out, fieldnames=COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for record in records:
        flat = dict(record)
        for name, value in flat.items():
            if isinstance(value, bool):
                flat[name] = "true" if value else "false"
        flat["tags"] = orjson.dumps(record.get("tags") or []).decode()
        flat["decisions"] = orjson.dumps(record["decisions"]).decode()
        writer.writerow(flat)
        count += 1
    return count
