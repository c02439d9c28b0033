"""One chain, walked in sequence order against its signed head and checkpoints.

Every problem is found (the walk goes on past one: an altered row's stored hash is taken as
given for the next link, a gap resumes at the next row, an inserted row is skipped), so
`audit verify --all` can list them all; plain `verify` reports each chain's first. Events the
database rejected (quarantine) are links of the chain like any other and are checked as such.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, func, select

from gateway.audit import tables
from gateway.audit.events import (
    ATTEMPT_FIELDS,
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
    last_seq: int | None = None  # a run of deleted rows ends here

    def describe(self) -> str:
        where = f"chain {self.chain_id}"
        if self.seq is not None:
            where += f" seq {self.seq}"
        if self.row_id is not None:
            where += f" (row id {self.row_id}, request {self.request_id})"
        return f"{self.kind.upper()}: {where}: {self.detail}"

    @property
    def seqs(self) -> tuple[int, int] | None:
        """The sequence numbers the problem covers (None: the whole chain, e.g. its head)."""
        if self.seq is None:
            return None
        return self.seq, self.last_seq if self.last_seq is not None else self.seq


@dataclass(frozen=True, slots=True)
class Quarantined:
    chain_id: str
    seq: int
    error: str

    def describe(self) -> str:
        return (
            f"QUARANTINED: chain {self.chain_id} seq {self.seq}: rejected by the database "
            f"({self.error}); kept whole in tollgate_audit_quarantine, hash-chained and signed"
        )


@dataclass(slots=True)
class Tally:
    rows: int = 0
    checkpoints: int = 0
    quarantined: list[Quarantined] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Anchor:
    seq: int
    row_hash: str


def canonical_of_row(
    row: Mapping[str, Any], decisions: list[list[Any]], attempts: list[list[Any]]
) -> bytes:
    values = [row[name] for name in COLUMNS]
    for i in TIME_INDEXES:
        values[i] = from_datetime(values[i])
    resilience = row["savings_resilience_nanousd"]
    extras: dict[str, Any] = {}
    if attempts or resilience or row["attempts"] != 1:
        extras = {"attempts": attempts, "resilience": resilience}
        if row["attempts"] != len(attempts):  # the count no longer matches what it counts
            extras["count"] = row["attempts"]
    return canonical(values, decisions, extras)


class ChainCheck:
    def __init__(
        self, conn: Connection, signer: Signer, chain_id: str, head: Any, tally: Tally
    ) -> None:
        self.conn = conn
        self.signer = signer
        self.chain_id = chain_id
        self.head = head
        self.tally = tally
        self.marks: dict[int, str] = {}

    def run(self, since: datetime | None = None, upto: int | None = None) -> Problem | None:
        """The chain's first problem (rows up to `upto` only, when given), or None."""
        return next(self.problems(since, upto), None)

    def problems(self, since: datetime | None = None, upto: int | None = None) -> Iterator[Problem]:
        if self.head is None:
            yield self._problem("inserted", None, "rows in a chain no gateway signed")
            return
        if not self.signer.same(
            self.signer.head(self.chain_id, self.head.last_seq, self.head.last_hash),
            self.head.signature,
        ):
            yield self._problem("forged", None, "the signed chain head does not match its HMAC")
            return
        anchor, forged = self._checkpoints()
        yield from forged
        yield from self._walk(anchor, since, upto)

    def _problem(
        self, kind: str, seq: int | None, detail: str, row: Any = None, last: int | None = None
    ) -> Problem:
        return Problem(
            kind,
            self.chain_id,
            seq,
            detail,
            row_id=row.id if row is not None else None,
            request_id=row.request_id if row is not None else None,
            last_seq=last,
        )

    def _checkpoints(self) -> tuple[Anchor | None, list[Problem]]:
        """Checks every checkpoint signature, noting the hashes they vouch for (`self.marks`,
        with the head's); returns the newest prune anchor (where the chain now starts)."""
        table = tables.checkpoints
        anchor: Anchor | None = None
        forged = []
        self.marks = {self.head.last_seq: self.head.last_hash}
        query = select(table).where(table.c.chain_id == self.chain_id).order_by(table.c.id)
        for cp in self.conn.execute(query):
            self.tally.checkpoints += 1
            expected = self.signer.checkpoint(
                cp.kind, self.chain_id, cp.seq, cp.row_hash, from_datetime(cp.created_at) or 0
            )
            if not self.signer.same(expected, cp.signature):
                forged.append(self._problem("forged", cp.seq, f"{cp.kind} checkpoint {cp.id} HMAC"))
                continue
            self.marks.setdefault(int(cp.seq), cp.row_hash)
            if cp.kind == "prune" and (anchor is None or cp.seq > anchor.seq):
                anchor = Anchor(cp.seq, cp.row_hash)
        return anchor, forged

    def _walk(
        self, anchor: Anchor | None, since: datetime | None, upto: int | None
    ) -> Iterator[Problem]:
        expected = anchor.seq + 1 if anchor else 1
        prev = anchor.row_hash if anchor else GENESIS
        if since is not None:
            # From the first event received since then, through the head: a chain is in
            # completion order, so later rows may have been received a little earlier.
            start = self._first_since(since)
            if start is None:
                return
            if start > expected:
                expected, prev = start, ""  # the first row's own link is taken as given
        quarantine = self._quarantine()
        lowest = expected if since is not None else None
        for row, decisions, bodies, attempts in self._rows(lowest, upto):
            if row.seq > self.head.last_seq:
                yield self._problem("inserted", row.seq, "beyond the signed head", row)
                continue
            if row.seq < expected:
                yield self._problem("inserted", row.seq, "before the chain's prune anchor", row)
                continue
            if not prev:
                prev = row.prev_hash
            prev, expected = yield from self._quarantined(quarantine, prev, expected, row.seq)
            if row.seq > expected:
                yield self._problem(
                    "deleted",
                    expected,
                    f"rows {expected}..{row.seq - 1} are missing (the chain resumes at seq "
                    f"{row.seq}, row id {row.id}, request {row.request_id})",
                    last=row.seq - 1,
                )
                prev = row.prev_hash
            problem = self._check_row(row, (decisions, attempts), bodies, prev)
            if problem is not None:
                yield problem
            self.tally.rows += 1
            prev, expected = row.row_hash, row.seq + 1
        end = self.head.last_seq if upto is None else min(upto, self.head.last_seq)
        prev, expected = yield from self._quarantined(quarantine, prev, expected, end + 1)
        if upto is None and expected <= self.head.last_seq:
            yield self._problem(
                "deleted",
                expected,
                f"rows {expected}..{self.head.last_seq} are missing",
                last=self.head.last_seq,
            )

    def _quarantined(
        self, quarantine: dict[int, Any], prev: str, expected: int, before: int
    ) -> Generator[Problem, None, tuple[str, int]]:
        """Walks the quarantined links from `expected` up to `before` (exclusive); the walk's
        new (prev, expected) is the generator's return value."""
        while expected < before and expected in quarantine:
            q = quarantine[expected]
            recomputed = chain_hash(q.prev_hash, q.event.encode())
            if recomputed != q.row_hash or (prev and q.prev_hash != prev):
                yield self._problem("altered", q.seq, "quarantined event does not match its hash")
            elif self.marks.get(q.seq, q.row_hash) != q.row_hash:
                yield self._problem("altered", q.seq, "quarantined event differs from a checkpoint")
            self.tally.quarantined.append(Quarantined(self.chain_id, q.seq, q.error))
            prev, expected = q.row_hash, expected + 1
        return prev, expected

    def _check_row(
        self,
        row: Any,
        children: tuple[list[list[Any]], list[list[Any]]],
        bodies: dict[str, str],
        prev: str,
    ) -> Problem | None:
        """`children`: the row's decisions and attempts, as stored."""
        recomputed = chain_hash(row.prev_hash, canonical_of_row(row._mapping, *children))
        if recomputed != row.row_hash:
            return self._problem("altered", row.seq, "content does not match its hash", row)
        if row.prev_hash != prev:
            return self._problem(
                "altered", row.seq, "does not link to the previous row (a row before it was"
                " rewritten, or this one inserted)", row,
            )  # fmt: skip
        if self.marks.get(row.seq, row.row_hash) != row.row_hash:
            return self._problem("altered", row.seq, "differs from a signed checkpoint", row)
        for part, content in bodies.items():
            if sha256_hex(content.encode()) != getattr(row, f"{part}_sha256"):
                return self._problem("altered", row.seq, f"stored {part} body was changed", row)
        return None

    def _quarantine(self) -> dict[int, Any]:
        q = tables.quarantine
        rows = self.conn.execute(select(q).where(q.c.chain_id == self.chain_id))
        return {int(r.seq): r for r in rows}

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
    ) -> Iterator[tuple[Any, list[list[Any]], dict[str, str], list[list[Any]]]]:
        """Rows in sequence order with their decisions and bodies, a window of seqs at a time
        (memory stays flat however long the chain), from `lowest` (default: every row, so one
        below a prune anchor is seen and reported)."""
        ev, dec, bod, att = tables.events, tables.decisions, tables.bodies, tables.attempts
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
            tries = _grouped(
                self.conn,
                select(att.c.seq, *(att.c[name] for name in ATTEMPT_FIELDS))
                .where(att.c.chain_id == self.chain_id, att.c.seq.between(lo, hi))
                .order_by(att.c.seq, att.c.position),
            )
            for row in rows:
                found = decisions.get(row.seq, [])
                yield (
                    row,
                    [list(d) for d in found],
                    dict(bodies.get(row.seq, [])),
                    [list(a) for a in tries.get(row.seq, [])],
                )


def _grouped(conn: Connection, query: Any) -> dict[int, list[tuple[Any, ...]]]:
    out: dict[int, list[tuple[Any, ...]]] = {}
    for seq, *rest in conn.execute(query):
        out.setdefault(int(seq), []).append(tuple(rest))
    return out
