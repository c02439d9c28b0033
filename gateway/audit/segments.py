"""The journal's files: segments, the shipper's position, per-process slots, group commit.

A segment is a file of newline-terminated lines followed, while it is being written, by zeros
(the writer maps it; see journal.py). No line contains a NUL byte (JSON escapes it), so the
first NUL marks the end of what was written; a segment the writer has moved past is cut to
its data, and a newer segment exists: a reader that sees one knows the other is complete.
"""

from __future__ import annotations

import fcntl
import logging
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import orjson

from gateway.audit.events import line_seq, split_line

log = logging.getLogger("gateway.audit")
MAX_SLOTS = 64


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
    """Atomically, not durably: it only saves re-reading. The database's signed chain head is
    what makes replay exact, so a position a power cut rolls back just means skipping, by
    sequence number, events the database already has (an fsync per batch would cost a disk
    flush each)."""
    tmp = directory / "shipped.json.tmp"
    tmp.write_bytes(orjson.dumps(_pos(position)))
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


class Syncer:
    """Group commit, in the audit worker: every interval, fdatasync the segment being written
    (the writer's mapped pages are in the page cache; this is what makes them survive a power
    cut), and the one before it once, when the writer moves on."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._number = 0
        self._fd = -1

    @property
    def segment(self) -> int:
        """The number of the segment being followed."""
        return self._number

    def sync(self) -> None:
        if self._fd < 0 and not self._follow_newest():
            return
        # Looked at first: once the next segment exists, the writer is done with this one, so
        # the sync below covers all of it and we can follow on.
        moved_on = segment_path(self.directory, self._number + 1).exists()
        os.fdatasync(self._fd)
        if moved_on:
            self.close()
            self._follow_newest()

    def _follow_newest(self) -> bool:
        numbers = segments(self.directory)
        if not numbers:
            return False
        try:
            self._fd = os.open(segment_path(self.directory, numbers[-1]), os.O_RDONLY)
        except FileNotFoundError:
            return False
        self._number = numbers[-1]
        return True

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def data_end(data: bytes) -> int:
    """Where the written lines of a segment's bytes end (the first NUL, else the end)."""
    nul = data.find(b"\0")
    return len(data) if nul < 0 else nul


def recover_segment(path: Path) -> int | None:
    """Cuts a segment to its complete lines (dropping the zero tail and a torn last line, as a
    power cut mid-write leaves them); returns the seq of its last line, or None if empty."""
    data = path.read_bytes()
    written = data_end(data)
    end = data.rfind(b"\n", 0, written) + 1
    if end < written:
        log.warning(
            "audit journal %s: cutting off a torn last line (%d bytes)", path, written - end
        )
    if end < len(data):
        os.truncate(path, end)
    if end == 0:
        return None
    start = data.rfind(b"\n", 0, end - 1) + 1
    return line_seq(split_line(data[start : end - 1])[0])
