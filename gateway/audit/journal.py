"""The local journal: every call's event appended before its response completes.

One `write()` per call, to a segment file opened O_APPEND: once it returns, the line is in the
kernel and survives a kill -9 of the gateway. A background thread fsyncs every
`fsync_interval` (group commit), so a power cut loses at most that interval; the request path
never waits for a disk flush. The shipper (shipper.py) reads segments from its checkpoint and
deletes them once they are in SQL.

Each process owns one slot directory (an flock held for its lifetime), which is its own hash
chain: no coordination between processes on the request path, and a process restarted after a
crash takes over its slot (and the events its predecessor had not shipped).
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path

import orjson

from gateway.audit.events import GENESIS, bodies_of, canonical, chain_hash, event_of
from gateway.call import CallRecord

log = logging.getLogger("gateway.audit")
MAX_SLOTS = 64


@dataclass(frozen=True, slots=True)
class JournalSettings:
    fsync_interval_s: float = 0.005
    segment_bytes: int = 64 * 1024 * 1024
    max_bytes: int = 1024 * 1024 * 1024
    alarm_fraction: float = 0.8
    client_ip: bool = True
    user_agent: bool = True


@dataclass(frozen=True, slots=True)
class Position:
    """How far the shipper has got: the next byte to read, and the last event shipped."""

    segment: int
    offset: int
    seq: int
    hash: str


def segment_path(directory: Path, number: int) -> Path:
    return directory / f"segment-{number:012d}.jsonl"


def segments(directory: Path) -> list[int]:
    return sorted(int(p.name[8:20]) for p in directory.glob("segment-*.jsonl"))


def read_position(directory: Path) -> Position | None:
    try:
        data = orjson.loads((directory / "shipped.json").read_bytes())
    except FileNotFoundError:
        return None
    return Position(data["segment"], data["offset"], data["seq"], data["hash"])


def write_position(directory: Path, position: Position) -> None:
    """Atomically and durably (the shipper calls it after each committed batch)."""
    tmp = directory / "shipped.json.tmp"
    with open(tmp, "wb") as out:
        out.write(orjson.dumps(_pos(position)))
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, directory / "shipped.json")


def _pos(p: Position) -> dict[str, object]:
    return {"segment": p.segment, "offset": p.offset, "seq": p.seq, "hash": p.hash}


class Slot:
    """One process's journal directory, locked for as long as the process lives."""

    def __init__(self, directory: Path, lock_fd: int, chain_id: str) -> None:
        self.directory = directory
        self.chain_id = chain_id
        self._lock_fd = lock_fd

    @classmethod
    def acquire(cls, base: Path) -> Slot:
        base.mkdir(parents=True, exist_ok=True)
        for index in range(MAX_SLOTS):
            directory = base / f"slot-{index}"
            directory.mkdir(exist_ok=True)
            fd = os.open(directory / "lock", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            return cls(directory, fd, _chain_id(directory))
        raise RuntimeError(f"all {MAX_SLOTS} audit journal slots under {base} are in use")

    def release(self) -> None:
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1


def _chain_id(directory: Path) -> str:
    path = directory / "chain.id"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        chain = uuid.uuid4().hex
        tmp = directory / "chain.id.tmp"
        tmp.write_text(chain)
        os.replace(tmp, path)
        return chain


class Journal:
    """Appends events (on the event loop) and fsyncs them in groups (in a thread)."""

    def __init__(self, slot: Slot, settings: JournalSettings) -> None:
        self.slot = slot
        self.settings = settings
        self.directory = slot.directory
        self.seq, self.hash = 0, GENESIS
        self.appended = 0  # bytes not yet shipped at open, plus every byte since
        self.shipped = 0  # advanced by the shipper
        self.failed = 0
        self._segment = 0
        self._size = 0
        self._fd = -1
        self._appends = 0
        self._synced = 0
        self._alarmed = False
        self._broken = False
        self._lock = threading.Lock()
        self._retired: list[int] = []
        self._stop = threading.Event()
        self._syncer: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def open(self) -> None:
        """Recovers the tail (a torn last line is cut off) and starts the fsync thread."""
        shipped = read_position(self.directory)
        numbers = segments(self.directory)
        if shipped is not None:
            self.seq, self.hash = shipped.seq, shipped.hash
        for number in reversed(numbers):
            last = _recover_tail(segment_path(self.directory, number))
            if last is not None:
                self.seq, self.hash = last
                break
        start = shipped.segment if shipped else 0
        self.appended = sum(
            segment_path(self.directory, n).stat().st_size for n in numbers if n >= start
        ) - (shipped.offset if shipped and start in numbers else 0)
        self._segment = numbers[-1] if numbers else max(start, 1)
        self._open_segment()
        self._syncer = threading.Thread(target=self._sync_loop, name="tollgate-audit-fsync")
        self._syncer.daemon = True
        self._syncer.start()

    def close(self) -> None:
        self._stop.set()
        if self._syncer is not None:
            self._syncer.join()
        self._sync_once()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    # -- the request path ------------------------------------------------------------------

    @property
    def pending_bytes(self) -> int:
        return self.appended - self.shipped

    @property
    def accepting(self) -> bool:
        return not self._broken and self.pending_bytes < self.settings.max_bytes

    def append(self, record: CallRecord) -> None:
        stored = bodies_of(record)
        event = event_of(
            record,
            stored,
            client_ip=self.settings.client_ip,
            user_agent=self.settings.user_agent,
        )
        event["chain_id"] = self.slot.chain_id
        event["seq"] = seq = self.seq + 1
        content = canonical(event)
        row_hash = chain_hash(self.hash, content)
        line = b"".join(
            (
                b'{"hash":"',
                row_hash.encode(),
                b'","prev":"',
                self.hash.encode(),
                b'","bodies":',
                orjson.dumps(stored),
                b',"event":',
                content,
                b"}\n",
            )
        )
        try:
            os.write(self._fd, line)
        except OSError:
            self.failed += 1
            self._broken = True
            log.exception("audit journal write failed; event: %s", line.decode(errors="replace"))
            return
        self.seq, self.hash = seq, row_hash
        self._appends += 1
        self._size += len(line)
        self.appended += len(line)
        if self._size >= self.settings.segment_bytes:
            self._rotate()
        self._check_alarm()

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

    @property
    def alarm(self) -> bool:
        return self._alarmed

    # -- segments and fsync ----------------------------------------------------------------

    def _open_segment(self) -> None:
        path = segment_path(self.directory, self._segment)
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._size = os.fstat(self._fd).st_size

    def _rotate(self) -> None:
        with self._lock:
            self._retired.append(self._fd)
            self._segment += 1
            self._open_segment()

    def _sync_loop(self) -> None:
        while not self._stop.wait(self.settings.fsync_interval_s):
            self._sync_once()

    def _sync_once(self) -> None:
        with self._lock:
            fd, retired, self._retired = self._fd, self._retired, []
        appends = self._appends
        try:
            for old in retired:
                os.fsync(old)
                os.close(old)
            if appends != self._synced and fd >= 0:
                os.fsync(fd)
                self._synced = appends
        except OSError:
            log.exception("audit journal fsync failed")


def _recover_tail(path: Path) -> tuple[int, str] | None:
    """The last complete event in a segment (cutting off a torn final line), or None."""
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    if end < len(data):
        log.warning(
            "audit journal %s: cutting off a torn last line (%d bytes)", path, len(data) - end
        )
        with open(path, "r+b") as f:
            f.truncate(end)
    if end == 0:
        return None
    start = data.rfind(b"\n", 0, end - 1) + 1
    entry = orjson.loads(data[start:end])
    return int(entry["event"]["seq"]), str(entry["hash"])
