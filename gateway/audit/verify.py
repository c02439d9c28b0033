"""`tollgate audit verify`: recompute every chain from the rows and check the signatures.

Per chain (one per gateway journal slot), walking rows in sequence order:
- a row whose content no longer matches its hash was altered (decisions and stored bodies
  are covered too);
- a gap in the sequence, or a chain ending before its signed head, means rows were deleted;
- a row past the signed head, before the last prune anchor, or in a chain nobody signed was
  inserted;
- a head or checkpoint whose HMAC does not match was forged.
The first problem of each chain is reported with its row id, sequence and request id.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, func, select

from gateway.audit import tables
from gateway.audit.events import (
    COLUMNS,
    GENESIS,
    TIME_INDEXES,
    canonical,
    chain_hash,
    from_datetime,
    sha256_hex,
)
from gateway.audit.signing import Signer

WINDOW = 5000


@dataclass(frozen=True, slots=True)
class Problem:
    kind: str  # altered | deleted | inserted | forged
    chain_id: str
    seq: int | None
    detail: str
    row_id: int | None = None
    request_id: str | None = None

    def describe(self) -> str:
        where = f"chain {self.chain_id}"
        if self.seq is not None:
            where += f" seq {self.seq}"
        if self.row_id is not None:
            where += f" (row id {self.row_id}, request {self.request_id})"
        return f"{self.kind.upper()}: {where}: {self.detail}"


@dataclass(slots=True)
class Report:
    rows: int = 0
    chains: int = 0
    checkpoints: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass(frozen=True, slots=True)
class Anchor:
    seq: int
    row_hash: str


def canonical_of_row(row: Mapping[str, Any], decisions: list[list[Any]]) -> bytes:
    values = [row[name] for name in COLUMNS]
    for i in TIME_INDEXES:
        values[i] = from_datetime(values[i])
    return canonical(values, decisions)


def verify(engine: Engine, signer: Signer, since: datetime | None = None) -> Report:
    report = Report()
    with engine.connect() as conn:
        heads = {r.chain_id: r for r in conn.execute(select(tables.chains))}
        seen = {r[0] for r in conn.execute(select(tables.events.c.chain_id).distinct())}
        for chain_id in sorted(seen | set(heads)):
            report.chains += 1
            problem = ChainCheck(conn, signer, chain_id, heads.get(chain_id), report).run(since)
            if problem is not None:
                report.problems.append(problem)
    return report


class ChainCheck:
    def __init__(
        self, conn: Connection, signer: Signer, chain_id: str, head: Any, report: Report
    ) -> None:
        self.conn = conn
        self.signer = signer
        self.chain_id = chain_id
        self.head = head
        self.report = report
        self.marks: dict[int, str] = {}

    def run(self, since: datetime | None = None, upto: int | None = None) -> Problem | None:
        """The chain's first problem (rows up to `upto` only, when given), or None."""
        if self.head is None:
            return self._problem("inserted", None, "rows in a chain no gateway signed")
        if not self.signer.same(
            self.signer.head(self.chain_id, self.head.last_seq, self.head.last_hash),
            self.head.signature,
        ):
            return self._problem("forged", None, "the signed chain head does not match its HMAC")
        anchor, problem = self._checkpoints()
        if problem is not None:
            return problem
        return self._walk(anchor, since, upto)

    def _problem(self, kind: str, seq: int | None, detail: str, row: Any = None) -> Problem:
        return Problem(
            kind,
            self.chain_id,
            seq,
            detail,
            row_id=row.id if row is not None else None,
            request_id=row.request_id if row is not None else None,
        )

    def _checkpoints(self) -> tuple[Anchor | None, Problem | None]:
        """Checks every checkpoint signature, noting the hashes they vouch for (`self.marks`,
        with the head's); returns the newest prune anchor (where the chain now starts)."""
        table = tables.checkpoints
        anchor: Anchor | None = None
        self.marks = {self.head.last_seq: self.head.last_hash}
        query = select(table).where(table.c.chain_id == self.chain_id).order_by(table.c.id)
        for cp in self.conn.execute(query):
            self.report.checkpoints += 1
            expected = self.signer.checkpoint(
                cp.kind, self.chain_id, cp.seq, cp.row_hash, from_datetime(cp.created_at) or 0
            )
            if not self.signer.same(expected, cp.signature):
                return None, self._problem("forged", cp.seq, f"{cp.kind} checkpoint {cp.id} HMAC")
            self.marks.setdefault(int(cp.seq), cp.row_hash)
            if cp.kind == "prune" and (anchor is None or cp.seq > anchor.seq):
                anchor = Anchor(cp.seq, cp.row_hash)
        return anchor, None

    def _walk(
        self, anchor: Anchor | None, since: datetime | None, upto: int | None
    ) -> Problem | None:
        expected = anchor.seq + 1 if anchor else 1
        prev = anchor.row_hash if anchor else GENESIS
        if since is not None:
            # From the first event received since then, through the head: a chain is in
            # completion order, so later rows may have been received a little earlier.
            start = self._first_since(since)
            if start is None:
                return None
            if start > expected:
                expected, prev = start, ""  # the first row's own link is taken as given
        marks = self.marks
        last_seq = expected - 1
        lowest = expected if since is not None else None
        for row, decisions, bodies in self._rows(lowest, upto):
            if row.seq > self.head.last_seq:
                return self._problem("inserted", row.seq, "beyond the signed head", row)
            if row.seq < expected:
                return self._problem("inserted", row.seq, "before the chain's prune anchor", row)
            if not prev:
                prev = row.prev_hash
            if row.seq > expected:
                return self._problem(
                    "deleted",
                    expected,
                    f"rows {expected}..{row.seq - 1} are missing (the chain resumes at seq "
                    f"{row.seq}, row id {row.id}, request {row.request_id})",
                )
            problem = self._check_row(row, decisions, bodies, prev, marks)
            if problem is not None:
                return problem
            self.report.rows += 1
            prev, expected, last_seq = row.row_hash, row.seq + 1, row.seq
        if upto is None and last_seq < self.head.last_seq:
            return self._problem(
                "deleted", last_seq + 1, f"rows {last_seq + 1}..{self.head.last_seq} are missing"
            )
        return None

    def _check_row(
        self,
        row: Any,
        decisions: list[list[Any]],
        bodies: dict[str, str],
        prev: str,
        marks: dict[int, str],
    ) -> Problem | None:
        recomputed = chain_hash(row.prev_hash, canonical_of_row(row._mapping, decisions))
        if recomputed != row.row_hash:
            return self._problem("altered", row.seq, "content does not match its hash", row)
        if row.prev_hash != prev:
            return self._problem(
                "altered", row.seq, "does not link to the previous row (a row before it was"
                " rewritten, or this one inserted)", row,
            )  # fmt: skip
        if marks.get(row.seq, row.row_hash) != row.row_hash:
            return self._problem("altered", row.seq, "differs from a signed checkpoint", row)
        for part, content in bodies.items():
            if sha256_hex(content.encode()) != getattr(row, f"{part}_sha256"):
                return self._problem("altered", row.seq, f"stored {part} body was changed", row)
        return None

    def _first_since(self, since: datetime) -> int | None:
        ev = tables.events
        found = self.conn.execute(
            select(func.min(ev.c.seq)).where(
                ev.c.chain_id == self.chain_id, ev.c.received_at >= since
            )
        ).scalar()
        return int(found) if found is not None else None

    def _rows(
        self, lowest: int | None, upto: int | None
    ) -> Iterator[tuple[Any, list[list[Any]], dict[str, str]]]:
        """Rows in sequence order with their decisions and bodies, a window of seqs at a time
        (memory stays flat however long the chain), from `lowest` (default: every row, so one
        below a prune anchor is seen and reported)."""
        ev, dec, bod = tables.events, tables.decisions, tables.bodies
        where = [ev.c.chain_id == self.chain_id]
        if lowest is not None:
            where.append(ev.c.seq >= lowest)
        if upto is not None:
            where.append(ev.c.seq <= upto)
        bounds = self.conn.execute(select(func.min(ev.c.seq), func.max(ev.c.seq)).where(*where))
        low, high = bounds.one()
        if low is None:
            return
        for lo in range(int(low), int(high) + 1, WINDOW):
            hi = lo + WINDOW - 1
            rows = self.conn.execute(
                select(ev).where(*where, ev.c.seq.between(lo, hi)).order_by(ev.c.seq)
            ).all()
            decisions = _grouped(
                self.conn,
                select(dec.c.seq, dec.c.plugin, dec.c.action, dec.c.reason, dec.c.enforced)
                .where(dec.c.chain_id == self.chain_id, dec.c.seq.between(lo, hi))
                .order_by(dec.c.seq, dec.c.position),
            )
            bodies = _grouped(
                self.conn,
                select(bod.c.seq, bod.c.part, bod.c.content)
                .where(bod.c.chain_id == self.chain_id, bod.c.seq.between(lo, hi))
                .order_by(bod.c.seq, bod.c.part),
            )
            for row in rows:
                found = decisions.get(row.seq, [])
                yield row, [list(d) for d in found], dict(bodies.get(row.seq, []))


def _grouped(conn: Connection, query: Any) -> dict[int, list[tuple[Any, ...]]]:
    out: dict[int, list[tuple[Any, ...]]] = {}
    for seq, *rest in conn.execute(query):
        out.setdefault(int(seq), []).append(tuple(rest))
    return out
