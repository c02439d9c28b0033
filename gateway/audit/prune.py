"""`tollgate audit prune --before`: retention without breaking the chain.

Per chain, the rows received before the cut-off form a prefix (sequence order); that prefix is
verified first (pruning must not destroy the evidence of tampering: a problem stops it unless a
signed acknowledgement covers it, incidents.py), then a signed `prune` checkpoint records the
last removed row's hash, and the rows go, all in one transaction. `verify` then starts the
chain at that anchor; acknowledgements are kept.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, Engine, delete, func, select

from gateway.audit import incidents, tables
from gateway.audit.chaincheck import ChainCheck, Problem, Tally
from gateway.audit.incidents import Acknowledgement
from gateway.audit.signing import Signer, insert_checkpoint
from gateway.audit.verify import unacknowledged
from gateway.errors import Fault


class PruneRefused(Fault):
    def __init__(self, problem: Problem) -> None:
        super().__init__(
            f"refusing to prune: the rows to remove do not verify: {problem.describe()} "
            "(once the incident is understood, `tollgate audit acknowledge` records it, signed, "
            "and prune may proceed past it)"
        )
        self.problem = problem


@dataclass(frozen=True, slots=True)
class Pruned:
    chain_id: str
    through_seq: int
    rows: int


def prune(engine: Engine, signer: Signer, before: datetime) -> list[Pruned]:
    done: list[Pruned] = []
    with engine.connect() as conn:
        chain_ids = [r[0] for r in conn.execute(select(tables.chains.c.chain_id))]
        acks, forged = incidents.load(conn, signer)
    if forged:
        raise PruneRefused(forged[0])
    for chain_id in chain_ids:
        with engine.begin() as conn:
            result = _prune_chain(conn, signer, chain_id, before, acks)
        if result is not None:
            done.append(result)
    return done


def _prune_chain(
    conn: Connection,
    signer: Signer,
    chain_id: str,
    before: datetime,
    acks: list[Acknowledgement],
) -> Pruned | None:
    ev = tables.events
    first_kept = conn.execute(
        select(func.min(ev.c.seq)).where(ev.c.chain_id == chain_id, ev.c.received_at >= before)
    ).scalar()
    if first_kept is None:
        last = conn.execute(select(func.max(ev.c.seq)).where(ev.c.chain_id == chain_id)).scalar()
        if last is None:
            return None
        through = int(last)
    else:
        through = int(first_kept) - 1
    boundary = conn.execute(
        select(ev.c.row_hash).where(ev.c.chain_id == chain_id, ev.c.seq == through)
    ).first()
    if boundary is None:  # the last row to go may be a quarantined link
        q = tables.quarantine
        boundary = conn.execute(
            select(q.c.row_hash).where(q.c.chain_id == chain_id, q.c.seq == through)
        ).first()
    if boundary is None:
        return None  # nothing older than the cut-off (or already pruned up to here)
    head = conn.execute(select(tables.chains).where(tables.chains.c.chain_id == chain_id)).first()
    check = ChainCheck(conn, signer, chain_id, head, Tally())
    problem = unacknowledged(check, acks, through)
    if problem is not None:
        raise PruneRefused(problem)
    insert_checkpoint(conn, signer, chain_id, "prune", through, boundary.row_hash, time.time())
    for table in (tables.decisions, tables.attempts, tables.bodies, tables.quarantine):
        conn.execute(delete(table).where(table.c.chain_id == chain_id, table.c.seq <= through))
    removed = conn.execute(delete(ev).where(ev.c.chain_id == chain_id, ev.c.seq <= through))
    return Pruned(chain_id, through, removed.rowcount)
