"""When the audit log meets something it cannot store or a confirmed tamper: a rejected event is
quarantined (kept, chained, signed) and never blocks the events behind it; values a client
chooses are bounded before they are journaled; `verify --all` lists every problem; a signed
acknowledgement lets retention go on without hiding the incident; export marks bad rows."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from sqlalchemy import Engine, select, update

from gateway.audit import tables
from gateway.audit.export import rows as export_rows
from gateway.audit.export import write
from gateway.audit.incidents import acknowledge
from gateway.audit.prune import PruneRefused, prune
from gateway.audit.verify import verify
from gateway.call import Call, CallRecord, Outcome, Principal
from tests.integration.test_audit_journal import close, engine, open_journal, record, ship
from tests.support.audit import events, signer

__all__ = ["engine"]  # the fixture: SQLite and PostgreSQL


def test_an_event_the_database_rejects_is_quarantined_and_the_rest_ship(
    engine: Engine, tmp_path: Path
) -> None:
    journal = open_journal(tmp_path)
    shipper = ship(journal, engine)
    for n in range(6):
        made = record(n)
        journal.append(made._replace(model=None) if n == 2 else made)  # type: ignore[arg-type]
    close(journal, shipper)
    assert [r.seq for r in events(engine)] == [1, 2, 4, 5, 6]
    with engine.connect() as conn:
        (kept,) = conn.execute(select(tables.quarantine)).all()
    assert kept.seq == 3 and '"r2"' in kept.event and "model" in kept.error.lower()
    assert shipper.state.quarantined == 1
    report = verify(engine, signer())
    assert report.ok, [p.describe() for p in report.problems]
    assert [q.seq for q in report.quarantined] == [3] and report.rows == 5
    with engine.begin() as conn:  # a quarantined event is tamper-evident like any other
        conn.execute(update(tables.quarantine).values(event=kept.event.replace("r2", "rX")))
    assert verify(engine, signer()).problems[0].describe().startswith("ALTERED")


def test_values_a_client_chooses_are_bounded_before_they_are_journaled(
    engine: Engine, tmp_path: Path
) -> None:
    """A 5,000-character model name or key name once overflowed varchar(200) and stopped
    shipping for good; now it is cut and marked, and everything ships."""
    journal = open_journal(tmp_path)
    shipper = ship(journal, engine)
    long = "m" * 5000 + "\x00"
    call = Call("r-long", "openai", "chat.completions", long, {"messages": []}, False, False)
    call.principal = Principal(key_id="k" * 100, name="n" * 300, team="t\x00" * 150)
    journal.append(CallRecord.of(call, Outcome(status=404, error_type="x" * 100)))
    journal.append(record(1))
    close(journal, shipper)
    first, second = events(engine)
    assert len(first.model) == 200 and first.model.endswith("...[5001 chars in all]")
    assert len(first.team) == 200 and "\x00" not in first.team
    assert second.request_id == "r1" and shipper.state.quarantined == 0
    assert verify(engine, signer()).ok


def _audited(engine: Engine, tmp_path: Path, count: int = 8) -> None:
    journal = open_journal(tmp_path)
    shipper = ship(journal, engine)
    for n in range(count):
        journal.append(record(n))
    close(journal, shipper)


def _alter(engine: Engine, *seqs: int) -> None:
    ev = tables.events
    with engine.begin() as conn:
        for seq in seqs:
            conn.execute(update(ev).where(ev.c.seq == seq).values(status=299))


def test_verify_all_lists_every_problem_and_how_many_chains_verified(
    engine: Engine, tmp_path: Path
) -> None:
    _audited(engine, tmp_path)
    _alter(engine, 2, 6)
    assert [p.seq for p in verify(engine, signer()).problems] == [2]
    report = verify(engine, signer(), every=True)
    assert [(p.kind, p.seq) for p in report.problems] == [("altered", 2), ("altered", 6)]
    assert report.chains == 1 and report.chains_ok == 0


def test_an_acknowledged_incident_is_listed_and_lets_prune_proceed(
    engine: Engine, tmp_path: Path
) -> None:
    _audited(engine, tmp_path)
    _alter(engine, 3)
    cut = events(engine)[5].received_at
    with pytest.raises(PruneRefused, match="tollgate audit acknowledge"):
        prune(engine, signer(), cut)
    chain = events(engine)[0].chain_id
    with engine.begin() as conn:
        acknowledge(conn, signer(), chain, (3, 3), "row 3 edited by a DBA on 2026-11-30, see INC-7")
    report = verify(engine, signer())
    assert report.ok and report.chains_ok == 1
    ((problem, ack),) = report.acknowledged
    assert problem.seq == 3 and "INC-7" in ack.note
    (done,) = prune(engine, signer(), cut)
    assert done.through_seq == 5
    after = verify(engine, signer())
    assert after.ok and after.rows == 3
    with engine.connect() as conn:  # the incident outlives the rows it was about
        assert conn.execute(select(tables.acknowledgements)).all()


def test_an_acknowledgement_cannot_be_forged_in_the_database(
    engine: Engine, tmp_path: Path
) -> None:
    _audited(engine, tmp_path)
    _alter(engine, 4)
    chain = events(engine)[0].chain_id
    with engine.begin() as conn:
        acknowledge(conn, signer(), chain, (4, 4), "looked into")
        conn.execute(update(tables.acknowledgements).values(last_seq=8))  # widened afterwards
    kinds = sorted(p.kind for p in verify(engine, signer(), every=True).problems)
    assert kinds == ["altered", "forged"]


def test_export_marks_rows_that_fail_verification_and_writes_plain_booleans(
    engine: Engine, tmp_path: Path
) -> None:
    _audited(engine, tmp_path, count=3)
    _alter(engine, 2)
    flagged = verify(engine, signer(), every=True).flagged()
    records = list(export_rows(engine, None, None, None, flagged))
    assert [r["verification"] for r in records] == ["ok", "altered", "ok"]
    out = io.StringIO()
    write(iter(records), out, "csv")
    header, first, *_ = out.getvalue().splitlines()
    stream = header.split(",").index("stream")
    assert first.split(",")[stream] == "false"
    assert header.split(",")[-1] == "verification"
