"""Ships the journal to SQL in batches, in order, exactly once, from a background thread.

Each batch is one transaction: the events, their decisions and bodies, and the chain's signed
head (last seq and hash). The head is what makes replay exact: after a crash the shipper asks
the database how far the chain got and skips what is already there, whatever the local
position file says. While the database is away the batch is retried with backoff and the
journal grows (journal.py bounds it); events arrive in order when it returns.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import orjson
from sqlalchemy import Connection, Engine, func, insert, select, update

from gateway.audit import tables
from gateway.audit.events import GENESIS, chain_hash, line_seq, micros, split_line, to_datetime
from gateway.audit.rows import BODY_COLUMNS, insert_rows, write_events
from gateway.audit.segments import (
    Position,
    data_end,
    read_position,
    segment_path,
    segments,
    write_position,
)
from gateway.audit.signing import Signer, insert_checkpoint
from gateway.errors import Fault
from gateway.stores.sql import rejected_value

log = logging.getLogger("gateway.audit")
READ_BYTES = 4 * 1024 * 1024
MAX_QUARANTINE_RUN = 20


class QuarantineStopped(Fault):
    """Too many events in a row rejected: the schema, not the data, is wrong."""


@dataclass(frozen=True, slots=True)
class ShipperSettings:
    batch_size: int = 500
    interval_s: float = 0.1
    checkpoint_s: float = 60.0
    max_backoff_s: float = 5.0
    # Asleep, still look at the journal this often (lines appended with no wake-up).
    idle_s: float = 5.0


@dataclass(slots=True)
class Entry:
    seq: int
    event: bytes  # canonical form, hashed as is
    bodies: bytes | None


@dataclass(slots=True)
class ShipperState:
    """Read by /readyz and /metrics from the event loop; written only by the shipper thread."""

    shipped_seq: int = 0
    shipped_events: int = 0
    drained: bool = False  # the last look found nothing left to ship
    failing: bool = False
    last_error: str | None = None
    failures: int = 0
    quarantined: int = 0
    last_quarantine: str | None = None
    last_checkpoint: float = field(default_factory=time.time)


class Shipper:
    def __init__(
        self,
        directory: Path,
        chain_id: str,
        engine: Engine,
        signer: Signer,
        settings: ShipperSettings,
        clock: Callable[[], float] = time.time,
        report: Callable[[ShipperState], None] | None = None,
    ) -> None:
        self.directory = directory
        self.chain_id = chain_id
        self.engine = engine
        self.signer = signer
        self.settings = settings
        self.state = ShipperState()
        self._clock = clock
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._db_seq: int | None = None
        self._prev = GENESIS  # the chain's last row hash, as the database has it
        self._since_checkpoint = 0
        self._report = report
        self._reported = 0.0
        self._streak = 0  # quarantines since the last batch the database took

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="tollgate-audit-shipper")
        self._thread.daemon = True
        self._thread.start()

    def wake(self) -> None:
        """New lines may be in the journal (the worker synced after a nudge)."""
        self._wake.set()

    def stop(self, timeout_s: float) -> bool:
        """Drains what is journaled (for at most `timeout_s`); True when all of it is in SQL.
        What is left stays in the journal and ships on the next start."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive() or not self.state.drained:
                log.error(
                    "audit journal not drained at shutdown: what is left ships on the next "
                    "start (%s)",
                    self.state.last_error or f"not done within {timeout_s:.0f}s",
                )
                return False
        return True

    # -- the thread ------------------------------------------------------------------------

    def _run(self) -> None:
        directory = self.directory
        first = segments(directory)
        position = read_position(directory) or Position(first[0] if first else 1, 0, 0, GENESIS)
        self.state.shipped_seq = position.seq
        backoff = 0.05
        while True:
            # Read before the step: only a step that began after the stop request has seen
            # every line appended before it (the last step may have read just before them).
            stopping = self._stopping.is_set()
            try:
                position, progressed = self._step(position)
                if self.state.failing:
                    log.warning("audit database reachable again; shipping the journal")
                self.state.failing, self.state.last_error = False, None
                backoff = 0.05
            except Exception as exc:  # noqa: BLE001 - any failure: keep the journal, retry
                self._failed(exc)
                self._publish(force=True)
                if self._stopping.wait(backoff):
                    return  # stopping while the database is away: the journal keeps it
                backoff = min(backoff * 2, self.settings.max_backoff_s)
                continue
            self.state.drained = not progressed
            self._publish(force=not progressed)
            if progressed:
                continue
            if stopping:
                self._final_checkpoint(position)
                return
            if self._stopping.is_set():
                continue  # asked to stop during that step: one more look
            # Asleep until the worker has synced new lines; then a short gathering pause, so
            # a busy gateway's events ship in batches rather than one transaction per sync.
            self._wake.wait(self.settings.idle_s)
            self._wake.clear()
            self._stopping.wait(self.settings.interval_s)

    def _publish(self, force: bool) -> None:
        """Progress for /readyz (status.json): before every wait, and every 0.25 s between."""
        if self._report is None:
            return
        now = time.monotonic()
        if force or now - self._reported >= 0.25:
            self._reported = now
            try:
                self._report(self.state)
            except OSError:
                log.warning("could not write the audit worker's status", exc_info=True)

    def _failed(self, exc: Exception) -> None:
        self.state.failures += 1
        first = not self.state.failing
        self.state.failing, self.state.last_error = True, f"{type(exc).__name__}: {exc}"[:500]
        if first:
            log.error(
                "audit database unavailable, events stay journaled: %s", self.state.last_error
            )
        self._db_seq = None  # ask again where the chain got to once it is back

    def _step(self, position: Position) -> tuple[Position, bool]:
        if self._db_seq is None:
            self._db_seq, self._prev = self._db_head()
        entries, after = self._read(position)
        if after == position:
            return position, False
        fresh = [e for e in entries if e.seq > self._db_seq]
        if fresh:
            self._prev = self._isolating(fresh, self._prev)
            self._db_seq = fresh[-1].seq
            self.state.shipped_events += len(fresh)
        after = Position(after.segment, after.offset, after.seq, self._prev)
        write_position(self.directory, after)
        self.state.shipped_seq = after.seq
        for number in segments(self.directory):
            if number < after.segment:
                segment_path(self.directory, number).unlink(missing_ok=True)
        return after, True

    def _db_head(self) -> tuple[int, str]:
        chains, quarantine = tables.chains, tables.quarantine
        with self.engine.connect() as conn:
            row = conn.execute(
                select(chains.c.last_seq, chains.c.last_hash).where(
                    chains.c.chain_id == self.chain_id
                )
            ).first()
            self.state.quarantined = int(
                conn.execute(
                    select(func.count()).where(quarantine.c.chain_id == self.chain_id)
                ).scalar()
                or 0
            )
        return (int(row[0]), str(row[1])) if row else (0, GENESIS)

    def _read(self, position: Position) -> tuple[list[Entry], Position]:
        """Complete lines from `position` (up to a batch), and the position after them."""
        path = segment_path(self.directory, position.segment)
        try:
            with open(path, "rb") as f:
                f.seek(position.offset)
                data = f.read(READ_BYTES)
        except FileNotFoundError:
            data = b""
        data = data[: data_end(data)]  # the segment being written ends in zeros
        entries: list[Entry] = []
        seq, start = position.seq, 0
        while len(entries) < self.settings.batch_size:
            end = data.find(b"\n", start)
            if end < 0:
                break
            event, bodies = split_line(data[start:end])
            entries.append(Entry(line_seq(event), event, bodies))
            seq = entries[-1].seq
            start = end + 1
        if not entries and start == len(data) and self._newer_segment(position.segment):
            return [], Position(position.segment + 1, 0, seq, position.hash)
        return entries, Position(position.segment, position.offset + start, seq, position.hash)

    def _newer_segment(self, number: int) -> bool:
        return segment_path(self.directory, number + 1).exists()

    # -- SQL -------------------------------------------------------------------------------

    def _isolating(self, entries: list[Entry], prev: str) -> str:
        """Commits the batch; if the database rejects it for a value it cannot store, halves
        it until the rejected event is alone, and quarantines that one (the rest ship)."""
        try:
            last = self._commit(entries, prev)
        except Exception as exc:
            if not rejected_value(exc):
                raise
            if len(entries) == 1:
                return self._quarantine(entries[0], prev, exc)
            middle = len(entries) // 2
            prev = self._isolating(entries[:middle], prev)
            return self._isolating(entries[middle:], prev)
        self._streak = 0
        return last

    def _quarantine(self, entry: Entry, prev: str, exc: Exception) -> str:
        """Keeps a rejected event whole in the quarantine table, chained and under the signed
        head, so nothing is lost or hidden and the events after it still ship. A run of
        rejections with no success between them is not a bad row but a broken schema: then the
        shipper stops and says so rather than quarantine the whole journal."""
        if self._streak >= MAX_QUARANTINE_RUN:
            raise QuarantineStopped(
                f"{self._streak} events in a row rejected by the database (last: {exc}); "
                "not quarantining more: check the audit schema (tollgate db upgrade)"
            ) from exc
        row_hash = chain_hash(prev, entry.event)
        now = self._clock()
        error = f"{type(exc).__name__}: {exc}".replace("\x00", "")[:2000]
        with self.engine.begin() as conn:
            conn.execute(
                insert(tables.quarantine).values(
                    chain_id=self.chain_id,
                    seq=entry.seq,
                    event=entry.event.decode("utf-8", "replace"),
                    bodies=entry.bodies.decode("utf-8", "replace") if entry.bodies else None,
                    prev_hash=prev,
                    row_hash=row_hash,
                    error=error,
                    quarantined_at=to_datetime(micros(now)),
                )
            )
            self._advance_head(conn, entry.seq, row_hash, now)
        self._streak += 1
        self.state.quarantined += 1
        self.state.last_quarantine = f"seq {entry.seq}: {error}"[:500]
        log.error(
            "audit event seq %d (chain %s) was rejected by the database and quarantined "
            "(tollgate_audit_quarantine); the events after it ship: %s",
            entry.seq,
            self.chain_id,
            error,
        )
        return row_hash

    def _commit(self, entries: list[Entry], prev: str) -> str:
        """Chains and inserts a batch in one transaction; returns the new last hash."""
        chain = self.chain_id
        staged, bodies = [], []
        for entry in entries:
            row_hash = chain_hash(prev, entry.event)
            staged.append((entry.event, prev, row_hash))
            prev = row_hash
            if entry.bodies is not None:
                for part, content in orjson.loads(entry.bodies).items():
                    bodies.append((chain, entry.seq, part, content))
        last = entries[-1]
        now = self._clock()
        with self.engine.begin() as conn:
            write_events(conn, staged)
            insert_rows(conn, tables.bodies, BODY_COLUMNS, bodies)
            self._advance_head(conn, last.seq, prev, now)
            self._since_checkpoint += len(entries)
            if now - self.state.last_checkpoint >= self.settings.checkpoint_s:
                self._checkpoint(conn, "periodic", last.seq, prev, now)
        return prev

    def _advance_head(self, conn: Connection, seq: int, row_hash: str, now: float) -> None:
        chain = self.chain_id
        values = {
            "last_seq": seq,
            "last_hash": row_hash,
            "updated_at": to_datetime(micros(now)),
            "signature": self.signer.head(chain, seq, row_hash),
        }
        table = tables.chains
        done = conn.execute(update(table).where(table.c.chain_id == chain).values(**values))
        if done.rowcount == 0:
            conn.execute(insert(table).values(chain_id=chain, **values))

    def _checkpoint(self, conn: Connection, kind: str, seq: int, row_hash: str, now: float) -> None:
        insert_checkpoint(conn, self.signer, self.chain_id, kind, seq, row_hash, now)
        self.state.last_checkpoint = now
        self._since_checkpoint = 0

    def _final_checkpoint(self, position: Position) -> None:
        if self._since_checkpoint == 0 or position.seq == 0:
            return
        try:
            with self.engine.begin() as conn:
                self._checkpoint(conn, "shutdown", position.seq, position.hash, self._clock())
        except Exception:
            log.warning("could not write the shutdown audit checkpoint", exc_info=True)
