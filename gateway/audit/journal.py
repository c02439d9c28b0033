"""The local journal: every call's event appended before its response completes.

The current segment is a file mapped into the gateway's memory (MAP_SHARED): appending a line
is a memory copy into the page cache, no system call. Once copied, the line belongs to the
kernel and survives a kill -9 of the gateway. The audit worker (worker.py, its own process),
nudged after an append (nudge.py), fdatasyncs the segment every `fsync_interval` while calls
arrive (group commit), so a power cut loses at most that interval; the request path never
waits for a disk flush. (A write() per call costs CPU in the running gateway: ext4 takes a
journal handle to update the file's times and size on most of them; bench/audit.py.) The worker's
shipper reads segments from its position and deletes them once they are in SQL.

Each process owns one slot directory (an flock held for its lifetime), which is its own hash
chain: no coordination between processes on the request path, and a process restarted after a
crash takes over its slot (and the events its predecessor had not shipped).
"""

from __future__ import annotations

import logging
import mmap
import os
from collections.abc import Callable
from dataclasses import dataclass

from gateway.audit.events import journal_line
from gateway.audit.segments import (
    Slot,
    read_position,
    recover_segment,
    segment_path,
    segments,
)
from gateway.call import CallRecord

log = logging.getLogger("gateway.audit")


@dataclass(frozen=True, slots=True)
class JournalSettings:
    segment_bytes: int = 16 * 1024 * 1024
    max_bytes: int = 1024 * 1024 * 1024
    alarm_fraction: float = 0.8
    client_ip: bool = True
    user_agent: bool = True


class Journal:
    """Appends calls to the mapped current segment, on the event loop.

    Durability beyond the kernel (fsync) and shipping are the audit worker's job, in its own
    process: this side never waits on a disk flush or on the database, and never shares the
    GIL with a thread doing either."""

    def __init__(
        self, slot: Slot, settings: JournalSettings, nudge: Callable[[], None] | None = None
    ) -> None:
        self.slot = slot
        self._nudge = nudge
        self.settings = settings
        self.directory = slot.directory
        self.seq = 0
        self.pending_bytes = 0  # not yet shipped, as of the last refresh()
        self.failed = 0
        self._segment = 0
        self._size = 0  # bytes written to the current segment
        self._capacity = 0
        self._fd = -1
        self._map: mmap.mmap | None = None
        self._released = 0  # bytes of the current segment no longer mapped in this process
        self._alarmed = False
        self._broken = False

    def open(self) -> None:
        """Recovers what a predecessor left (cut to complete lines) and starts a new segment."""
        shipped = read_position(self.directory)
        numbers = segments(self.directory)
        if shipped is not None:
            self.seq = shipped.seq
        last = None
        for number in numbers:
            found = recover_segment(segment_path(self.directory, number))
            last = found if found is not None else last
        if last is not None:
            self.seq = max(self.seq, last)
        self._segment = max([*numbers, shipped.segment if shipped else 0])
        self._start_segment(self.settings.segment_bytes)
        self.refresh()

    def close(self) -> None:
        """Cuts the current segment to its data (a clean end for the next reader)."""
        self._finish_segment()

    @property
    def accepting(self) -> bool:
        return not self._broken and self.pending_bytes < self.settings.max_bytes

    @property
    def alarm(self) -> bool:
        return self._alarmed

    def append(self, record: CallRecord) -> None:
        seq = self.seq + 1
        line = journal_line(
            record,
            self.slot.chain_id,
            seq,
            client_ip=self.settings.client_ip,
            user_agent=self.settings.user_agent,
        )
        size = len(line)
        try:
            if self._map is None or self._size + size > self._capacity:
                self._rotate(size)
            start, view = self._size, self._map
            assert view is not None
            # The newline last: a concurrent reader never takes a line it can see the end of
            # before the rest of it is there.
            view[start : start + size - 1] = line[:-1]
            view[start + size - 1] = 10
        except (OSError, ValueError):
            self.failed += 1
            self._broken = True
            log.exception("audit journal write failed; event: %s", line.decode(errors="replace"))
            return
        self.seq = seq
        self._size += size
        self.pending_bytes += size
        if self._nudge is not None:
            self._nudge()

    def refresh(self) -> None:
        """Recomputes what is waiting to ship from the worker's position (a few stat calls;
        called periodically, off the request path) and raises or clears the alarm. A journal
        that could not start a segment (disk full) tries again here."""
        if self._map is None and self._fd < 0:
            try:
                self._start_segment(self.settings.segment_bytes)
                log.warning("audit journal writable again")
            except OSError as exc:
                log.debug("audit journal still not writable: %s", exc)
        position = read_position(self.directory)
        pending = 0
        for number in segments(self.directory):
            if position is not None and number < position.segment:
                continue
            if number == self._segment:
                pending += self._size
                continue
            try:
                pending += segment_path(self.directory, number).stat().st_size
            except FileNotFoundError:
                continue
        if position is not None:
            pending -= position.offset
        self.pending_bytes = max(pending, 0)
        self._check_alarm()
        self._release_written()

    @property
    def written(self) -> int:
        """Bytes written to the current segment."""
        return self._size

    @property
    def released(self) -> int:
        """Bytes of the current segment no longer mapped in this process (refresh())."""
        return self._released

    def flush(self) -> None:
        """Writes the mapped segment's dirty pages to its file now (the kernel does so on its
        own, a kill -9 included; fsync stays the worker's)."""
        if self._map is not None:
            self._map.flush()

    def _release_written(self) -> None:
        """Unmaps the written pages from this process (they stay in the page cache, dirty until
        the worker syncs them): a segment filling up must not grow the gateway's RSS."""
        written = self._size - self._size % mmap.PAGESIZE
        if self._map is not None and written > self._released:
            self._map.madvise(mmap.MADV_DONTNEED, self._released, written - self._released)
            self._released = written

    def _check_alarm(self) -> None:
        near = self.pending_bytes >= self.settings.max_bytes * self.settings.alarm_fraction
        if near and not self._alarmed:
            self._alarmed = True
            log.error(
                "audit journal %.0f%% full (%d of %d bytes not yet in the database): at 100%% "
                "calls are refused; check the audit database",
                100 * self.pending_bytes / self.settings.max_bytes,
                self.pending_bytes,
                self.settings.max_bytes,
            )
        elif not near and self._alarmed:
            self._alarmed = False
            log.warning("audit journal back below its alarm level")

    def _start_segment(self, capacity: int) -> None:
        path = segment_path(self.directory, self._segment + 1)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            # Blocks reserved up front: a full disk is an OSError here (calls are then
            # refused), never a SIGBUS on a later write into a hole of the mapping.
            os.posix_fallocate(fd, 0, capacity)
            self._map = mmap.mmap(fd, capacity, mmap.MAP_SHARED, mmap.PROT_WRITE)
        except OSError:
            os.close(fd)
            path.unlink(missing_ok=True)
            raise
        self._segment += 1
        self._fd = fd
        self._capacity, self._size, self._released = capacity, 0, 0
        self._broken = False

    def _finish_segment(self) -> None:
        if self._map is not None:
            self._map.close()
            self._map = None
        if self._fd >= 0:
            os.ftruncate(self._fd, self._size)
            os.close(self._fd)
            self._fd = -1

    def _rotate(self, needed: int) -> None:
        """The old segment is cut to its data before the next one exists: a reader that sees
        the next one knows the old one is complete."""
        self._finish_segment()
        self._start_segment(max(self.settings.segment_bytes, needed))
