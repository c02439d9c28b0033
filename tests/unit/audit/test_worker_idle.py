"""The audit worker sleeps while nothing is appended, and still keeps the fsync window: after
a nudge it syncs at once and again after every quiet interval, then sleeps."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from gateway.audit.nudge import Nudge
from gateway.audit.worker import SyncLoop
from tests.support.wait import until

INTERVAL = 0.005


class CountingSyncer:
    def __init__(self) -> None:
        self.times: list[float] = []

    def sync(self) -> None:
        self.times.append(time.monotonic())


class CountingShipper:
    def __init__(self) -> None:
        self.wakes = 0

    def wake(self) -> None:
        self.wakes += 1


def test_an_idle_worker_sleeps_and_a_nudge_wakes_it(tmp_path: Path) -> None:
    nudge = Nudge(INTERVAL)
    wake_r, wake_w = os.pipe()
    syncer, shipper = CountingSyncer(), CountingShipper()
    loop = SyncLoop(syncer, shipper, INTERVAL, nudge.read_fd, wake_r)  # type: ignore[arg-type]
    stop = threading.Event()
    thread = threading.Thread(target=loop.run, args=(stop, os.getppid()))
    thread.start()
    try:
        time.sleep(0.5)  # idle: 100 intervals pass
        assert len(syncer.times) <= 2  # the start-up sync and the quiet interval's, no more
        before = len(syncer.times)
        nudged_at = time.monotonic()
        nudge()
        until(lambda: len(syncer.times) >= before + 2, timeout=5)
        # A line appended just after the nudge (no nudge of its own) is covered by a later sync.
        assert syncer.times[-1] >= nudged_at + INTERVAL
        time.sleep(0.3)
        assert len(syncer.times) <= before + 3  # back asleep
        assert shipper.wakes >= 2
    finally:
        stop.set()
        os.write(wake_w, b"!")
        thread.join(5)
        nudge.close()
        os.close(wake_r)
        os.close(wake_w)
    assert not thread.is_alive()


def test_nudges_are_rate_limited_to_one_per_interval() -> None:
    nudge = Nudge(60.0)
    try:
        for _ in range(100):
            nudge()
        os.set_blocking(nudge.read_fd, False)
        assert os.read(nudge.read_fd, 100) == b"!"
    finally:
        nudge.close()
