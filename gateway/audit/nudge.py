"""How the gateway wakes its audit worker: one byte down a pipe, at most once per fsync
interval, so an idle worker sleeps instead of polling the journal 200 times a second.

Correctness of the durability window: the gateway skips a nudge only within `interval` of the
previous one; the worker, once nudged, syncs again after every quiet `interval` and goes idle
only after a sync that came at least `interval` after the last nudge it read, so every line
appended without a nudge of its own is covered by that sync (worker.py, `SyncLoop`).
"""

from __future__ import annotations

import os
import time


class Nudge:
    """The gateway's end: `__call__` after each append (a clock read; a write() at most once
    per interval)."""

    __slots__ = ("_last", "interval", "read_fd", "write_fd")

    def __init__(self, interval_s: float) -> None:
        self.read_fd, self.write_fd = os.pipe()
        os.set_blocking(self.write_fd, False)
        os.set_inheritable(self.read_fd, True)
        self.interval = interval_s
        self._last = -interval_s

    def __call__(self) -> None:
        now = time.monotonic()
        if now - self._last < self.interval:
            return
        self._last = now
        try:
            os.write(self.write_fd, b"!")
        except BlockingIOError:  # a full pipe already says "wake up"
            pass

    def close(self) -> None:
        for fd in (self.read_fd, self.write_fd):
            try:
                os.close(fd)
            except OSError:
                pass
        self.read_fd = self.write_fd = -1


def drain(fd: int) -> bool:
    """Empties a non-blocking pipe; True if anything was in it."""
    got = False
    while True:
        try:
            data = os.read(fd, 4096)
        except BlockingIOError:
            return got
        if not data:
            return got
        got = True
