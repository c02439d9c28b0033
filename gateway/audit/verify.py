"""`tollgate audit verify`: recompute every chain from the rows and check the signatures.

Per chain (one per gateway journal slot), walking rows in sequence order (chaincheck.py):
- a row whose content no longer matches its hash was altered (decisions and stored bodies
  are covered too);
- a gap in the sequence, or a chain ending before its signed head, means rows were deleted;
- a row past the signed head, before the last prune anchor, or in a chain nobody signed was
  inserted;
- a head, checkpoint or acknowledgement whose HMAC does not match was forged.
By default each chain's first problem is reported; `every` reports all of them. Problems a
signed acknowledgement covers are listed as acknowledged (never hidden) and do not fail the
check; quarantined events are listed too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Engine, select

from gateway.audit import incidents, tables
from gateway.audit.chaincheck import ChainCheck, Problem, Quarantined, Tally
from gateway.audit.incidents import Acknowledgement
from gateway.audit.signing import Signer


@dataclass(slots=True)
class Report:
    rows: int = 0
    chains: int = 0
    chains_ok: int = 0  # chains with no problem left unacknowledged
    checkpoints: int = 0
    problems: list[Problem] = field(default_factory=list)
    acknowledged: list[tuple[Problem, Acknowledgement]] = field(default_factory=list)
    quarantined: list[Quarantined] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def flagged(self) -> dict[tuple[str, int], str]:
        """(chain, seq) -> problem kind, for every row a problem names (acknowledged too)."""
        out: dict[tuple[str, int], str] = {}
        for problem in [*self.problems, *(p for p, _ in self.acknowledged)]:
            span = problem.seqs
            if span is not None and problem.kind != "deleted":
                for seq in range(span[0], span[1] + 1):
                    out.setdefault((problem.chain_id, seq), problem.kind)
        return out


def verify(
    engine: Engine, signer: Signer, since: datetime | None = None, every: bool = False
) -> Report:
    report = Report()
    with engine.connect() as conn:
        acks, forged = incidents.load(conn, signer)
        report.problems.extend(forged)
        heads = {r.chain_id: r for r in conn.execute(select(tables.chains))}
        seen = {r[0] for r in conn.execute(select(tables.events.c.chain_id).distinct())}
        for chain_id in sorted(seen | set(heads)):
            report.chains += 1
            tally = Tally()
            check = ChainCheck(conn, signer, chain_id, heads.get(chain_id), tally)
            clean = True
            for problem in check.problems(since):
                ack = next((a for a in acks if a.covers(problem)), None)
                if ack is not None:
                    report.acknowledged.append((problem, ack))
                    continue
                report.problems.append(problem)
                clean = False
                if not every:
                    break
            report.chains_ok += clean
            report.rows += tally.rows
            report.checkpoints += tally.checkpoints
            report.quarantined.extend(tally.quarantined)
    return report


def unacknowledged(check: ChainCheck, acks: list[Acknowledgement], upto: int) -> Problem | None:
    """The first problem in a chain's rows up to `upto` that no acknowledgement covers."""
    for problem in check.problems(upto=upto):
        if not any(a.covers(problem) for a in acks):
            return problem
    return None


__all__ = ["Problem", "Quarantined", "Report", "unacknowledged", "verify"]
