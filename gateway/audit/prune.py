"""`tollgate audit prune --before`: retention without breaking the chain.

Per chain, the rows received before the cut-off form a prefix (sequence order); that prefix is
verified first (pruning must not destroy the evidence of tampering), then a signed `prune`
checkpoint records the last removed row's hash, and the rows go, all in one transaction.
`verify` then starts the chain at that anchor.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, Engine, delete, func, select

from gateway.audit import tables
from gateway.audit.signing import Signer, insert_checkpoint
from gateway.audit.verify import ChainCheck, Problem, Report


class PruneRefused(Exception):
    def __init__(self, problem: Problem) -> None:
        super().__init__(
            f"refusing to prune: the rows to remove do not verify: {problem.describe()}"
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
    for chain_id in chain_ids:
        with engine.begin() as conn:
            result = _prune_chain(conn, signer, chain_id, before)
        if result is not None:
            done.append(result)
    return done


def _prune_chain(
    conn: Connection, signer: Signer, chain_id: str, before: datetime
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
    if boundary is None:
        return None  # nothing older than the cut-off (or already pruned up to here)
    head = conn.execute(select(tables.chains).where(tables.chains.c.chain_id == chain_id)).first()
    problem = ChainCheck(conn, signer, chain_id, head, Report()).run(upto=through)
    if problem is not None:
        raise PruneRefused(problem)
    insert_checkpoint(conn, signer, chain_id, "prune", through, boundary.row_hash, time.time())
    for table in (tables.decisions, tables.bodies):
        conn.execute(delete(table).where(table.c.chain_id == chain_id, table.c.seq <= through))
    removed = conn.execute(delete(ev).where(ev.c.chain_id == chain_id, ev.c.seq <= through))
    return Pruned(chain_id, through, removed.rowcount)
