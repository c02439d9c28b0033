"""The journal and shipper on their own: torn tails, exact replay, segments, a full journal."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from gateway.audit.journal import Journal, JournalSettings
from gateway.audit.segments import (
    Position,
    Slot,
    Syncer,
    read_position,
    segment_path,
    segments,
    write_position,
)
from gateway.audit.shipper import Shipper, ShipperSettings
from gateway.audit.verify import verify
from gateway.call import Call, CallRecord, Outcome
from gateway.stores.sql import make_engine
from tests.support.audit import audit_engine, events, signer


@pytest.fixture(params=["sqlite", "postgres"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    with audit_engine(request.param, tmp_path) as made:
        yield made


def record(n: int) -> CallRecord:
    call = Call(f"r{n}", "openai", "chat.completions", "chat", {"messages": [n]}, False, False)
    return CallRecord.of(call, Outcome(status=200))


def open_journal(base: Path, **settings: int) -> Journal:
    journal = Journal(Slot.acquire(base), JournalSettings(**settings))  # type: ignore[arg-type]
    journal.open()
    return journal


def ship(journal: Journal, engine: Engine) -> Shipper:
    """The worker's shipper, run in this process (the worker process is tested end to end)."""
    shipper = Shipper(
        journal.directory,
        journal.slot.chain_id,
        engine,
        signer(),
        ShipperSettings(interval_s=0.005),
    )
    shipper.start()
    return shipper


def close(journal: Journal, shipper: Shipper | None = None) -> None:
    if shipper is not None:
        assert shipper.stop(30)
    journal.close()
    journal.slot.release()


def test_a_torn_last_line_is_cut_and_the_chain_goes_on(engine: Engine, tmp_path: Path) -> None:
    journal = open_journal(tmp_path)
    for n in range(3):
        journal.append(record(n))
    segment = segment_path(journal.directory, segments(journal.directory)[-1])
    end = journal.written
    # A kill -9 (not close()): the mapped segment stays full length, zeros after the data;
    # and a power cut tore the last write.
    journal.flush()
    with open(segment, "r+b") as f:
        f.seek(end)
        f.write(b'["torn')
    journal.slot.release()
    journal = open_journal(tmp_path)
    assert journal.seq == 3
    assert segment.stat().st_size == end, "cut to its complete lines"
    journal.append(record(3))
    close(journal, ship(journal, engine))
    assert [r.seq for r in events(engine)] == [1, 2, 3, 4]
    assert verify(engine, signer()).ok


def test_replay_after_a_crash_is_exactly_once(engine: Engine, tmp_path: Path) -> None:
    """The shipper committed a batch but died before recording its position: on restart it
    asks the database how far the chain got and skips what is there."""
    journal = open_journal(tmp_path)
    for n in range(5):
        journal.append(record(n))
    close(journal, ship(journal, engine))
    assert read_position(journal.directory) is not None
    write_position(journal.directory, Position(segments(journal.directory)[0], 0, 0, "0" * 64))
    journal = open_journal(tmp_path)
    journal.append(record(5))
    close(journal, ship(journal, engine))
    rows = events(engine)
    assert [r.seq for r in rows] == [1, 2, 3, 4, 5, 6]
    assert [r.request_id for r in rows] == [f"r{n}" for n in range(6)]
    assert verify(engine, signer()).ok


def test_segments_rotate_ship_in_order_and_are_deleted(engine: Engine, tmp_path: Path) -> None:
    journal = open_journal(tmp_path, segment_bytes=4000)
    shipper = ship(journal, engine)
    for n in range(60):
        journal.append(record(n))
        if n == 30:
            time.sleep(0.05)  # the shipper reads a segment while it is being written
    close(journal, shipper)
    assert [r.request_id for r in events(engine)] == [f"r{n}" for n in range(60)]
    assert len(segments(journal.directory)) == 1, "shipped segments are removed"
    journal.refresh()
    assert journal.pending_bytes == 0
    assert verify(engine, signer()).ok


def test_each_process_gets_its_own_slot_and_chain(tmp_path: Path) -> None:
    first, second = Slot.acquire(tmp_path), Slot.acquire(tmp_path)
    assert first.directory != second.directory and first.chain_id != second.chain_id
    first.release()
    again = Slot.acquire(tmp_path)
    assert (again.directory, again.chain_id) == (first.directory, first.chain_id)
    again.release()
    second.release()


def test_a_full_journal_refuses_and_alarms_first(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The database never answers: the journal grows to its bound, alarms near it, then
    stops accepting (the pipeline then refuses calls rather than serve them unrecorded)."""
    dead = make_engine("postgresql+psycopg://postgres@127.0.0.1:9/none?connect_timeout=1")
    journal = open_journal(tmp_path, max_bytes=20_000, alarm_fraction=0.5)  # type: ignore[arg-type]
    shipper = ship(journal, dead)
    caplog.set_level(logging.WARNING, "gateway.audit")
    appended = 0
    while journal.accepting:
        journal.append(record(appended))
        appended += 1
        journal.refresh()
    assert 10 < appended < 200
    assert any("audit journal" in r.message and "full" in r.message for r in caplog.records)
    deadline = time.monotonic() + 10
    while not shipper.state.failing and time.monotonic() < deadline:
        time.sleep(0.01)
    assert shipper.state.failing and shipper.state.shipped_seq == 0
    assert not shipper.stop(0.2), "cannot drain into a database that is away"
    journal.close()
    journal.slot.release()
    dead.dispose()


def test_the_syncer_follows_the_segment_being_written(tmp_path: Path) -> None:
    journal = open_journal(tmp_path, segment_bytes=600)
    syncer = Syncer(journal.directory)
    journal.append(record(1))
    syncer.sync()
    first = syncer.segment
    for n in range(2, 8):
        journal.append(record(n))
    syncer.sync()  # the first segment is complete: synced a last time, then let go
    assert syncer.segment == segments(journal.directory)[-1] > first
    syncer.close()
    close(journal)


def test_a_line_larger_than_a_segment_gets_a_segment_of_its_own(
    engine: Engine, tmp_path: Path
) -> None:
    journal = open_journal(tmp_path, segment_bytes=600)
    call = Call(
        "big", "openai", "chat.completions", "chat", {"messages": ["x" * 5000]}, False, False
    )
    call.capture, call.raw_body = "full", b"y" * 5000
    journal.append(CallRecord.of(call, Outcome(status=200)))
    journal.append(record(1))
    close(journal, ship(journal, engine))
    assert [r.request_id for r in events(engine)] == ["big", "r1"]


def test_written_pages_leave_the_gateway_but_not_the_journal(
    engine: Engine, tmp_path: Path
) -> None:
    """refresh() unmaps what is written (RSS stays flat); the data is still there to ship."""
    journal = open_journal(tmp_path)
    for n in range(40):
        journal.append(record(n))
    journal.refresh()
    assert journal.released > 0
    for n in range(40, 45):
        journal.append(record(n))
    close(journal, ship(journal, engine))
    assert [r.request_id for r in events(engine)] == [f"r{n}" for n in range(45)]


def test_a_dead_worker_is_restarted_and_ships_the_backlog(engine: Engine, tmp_path: Path) -> None:
    from gateway.audit.service import AuditLog
    from gateway.config.audit_schema import AuditConfig
    from tests.support.audit import SIGNING_KEY

    url = engine.url.render_as_string(hide_password=False)
    settings = AuditConfig(journal_dir=str(tmp_path / "j"), ship_interval_ms=5.0)
    log = AuditLog.open(settings, url, SIGNING_KEY, tmp_path)
    assert log.worker.proc is not None
    log.worker.proc.kill()
    log.worker.proc.wait(10)
    for n in range(5):
        log.journal.append(record(n))
    deadline = time.monotonic() + 15
    while log.status().lag_events:
        log.worker.ensure_running()  # what the gateway's monitor does every 0.25 s
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert log.worker.restarts == 1 and log.status().worker == "running"
    log.close()
    assert [r.request_id for r in events(engine)] == [f"r{n}" for n in range(5)]


def test_a_full_disk_refuses_calls_instead_of_crashing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A new segment's blocks are reserved when it is created; if the disk is full that fails
    there (and the gateway refuses calls) rather than as a SIGBUS on a write into the map."""
    import errno
    import os

    journal = open_journal(tmp_path, segment_bytes=600)

    def no_space(fd: int, offset: int, length: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", no_space)
    caplog.set_level(logging.ERROR, "gateway.audit")
    for n in range(10):
        journal.append(record(n))
    written = journal.seq
    assert 0 < written < 10 and journal.failed == 10 - written
    assert not journal.accepting
    assert "audit journal write failed" in caplog.text and '"r9"' in caplog.text, "in the log"
    monkeypatch.undo()  # space again: the periodic refresh reopens the journal
    journal.refresh()
    assert journal.accepting
    journal.append(record(10))
    assert journal.seq == written + 1
    close(journal)
