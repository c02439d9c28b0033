"""Known incidents: signed acknowledgements of problems `verify` reported.

After a confirmed tamper (or a quarantined event, a restored backup) the log cannot be made
whole again, but it must not stay unusable either: an auditor acknowledges the problems with
a note, signed with the audit key (so someone who can only write to the database cannot
acknowledge their own edit). `verify` still lists every acknowledged problem, as such, and
retention (`prune`) may then proceed past them. An acknowledgement is never pruned.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import Connection, insert, select

from gateway.audit import tables
from gateway.audit.chaincheck import Problem
from gateway.audit.events import from_datetime, to_datetime
from gateway.audit.signing import Signer


@dataclass(frozen=True, slots=True)
class Acknowledgement:
    id: int
    chain_id: str
    first_seq: int | None
    last_seq: int | None
    note: str

    def covers(self, problem: Problem) -> bool:
        if problem.chain_id != self.chain_id:
            return False
        span = problem.seqs
        if self.first_seq is None or self.last_seq is None:
            return span is None
        return span is not None and self.first_seq <= span[0] and span[1] <= self.last_seq

    def describe(self) -> str:
        where = (
            "the chain's head"
            if self.first_seq is None
            else f"seq {self.first_seq}..{self.last_seq}"
        )
        return f"acknowledgement {self.id} ({where}): {self.note}"


def load(conn: Connection, signer: Signer) -> tuple[list[Acknowledgement], list[Problem]]:
    """The acknowledgements whose signature holds, and a `forged` problem for each other."""
    table = tables.acknowledgements
    good, forged = [], []
    for row in conn.execute(select(table).order_by(table.c.id)):
        created = from_datetime(row.created_at) or 0
        expected = signer.acknowledgement(
            row.chain_id, row.first_seq, row.last_seq, row.note, created
        )
        if signer.same(expected, row.signature):
            good.append(
                Acknowledgement(row.id, row.chain_id, row.first_seq, row.last_seq, row.note)
            )
        else:
            forged.append(
                Problem("forged", row.chain_id, row.first_seq, f"acknowledgement {row.id} HMAC")
            )
    return good, forged


def acknowledge(
    conn: Connection,
    signer: Signer,
    chain_id: str,
    seqs: tuple[int, int] | None,
    note: str,
    now: float | None = None,
) -> int:
    created = round((time.time() if now is None else now) * 1_000_000)
    first, last = seqs if seqs is not None else (None, None)
    result = conn.execute(
        insert(tables.acknowledgements).values(
            chain_id=chain_id,
            first_seq=first,
            last_seq=last,
            note=note,
            created_at=to_datetime(created),
            signature=signer.acknowledgement(chain_id, first, last, note, created),
        )
    )
    return int(result.inserted_primary_key[0])  # type: ignore[index]
