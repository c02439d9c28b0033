"""The audit worker: one process beside each gateway process, owning everything slow about
auditing. It fsyncs the journal every `fsync_interval_ms` (group commit) and ships it to SQL
(shipper.py), so the gateway's event loop never waits on a disk flush or a database, and never
shares its GIL with a thread doing either (an in-process shipper thread cost the gateway
~25% of its max req/s through GIL hand-offs alone: bench/audit.py, docs/benchmarks.md). It
sleeps while nothing is appended: the gateway nudges it down a pipe (nudge.py) when calls
arrive.

Started by the gateway with its settings as the first line on stdin (the signing key never
appears in argv). Stops, draining, when the gateway closes that pipe (or on SIGTERM): a pipe
cannot be closed "too early", unlike a signal that arrives before a handler is installed.
Dies with its parent (PR_SET_PDEATHSIG), so a gateway killed with SIGKILL leaves no orphan
shipping beside its successor. Reports progress in status.json.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import select
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import orjson

from gateway.audit.nudge import drain
from gateway.audit.segments import Syncer
from gateway.audit.shipper import Shipper, ShipperSettings, ShipperState
from gateway.audit.signing import Signer

log = logging.getLogger("gateway.audit")
# Asleep, the worker still looks at the journal this often: a safety net for lines appended
# without a nudge (another tool writing the journal), never the durability window.
IDLE_CHECK_S = 5.0
_PR_SET_PDEATHSIG = 1


def write_status(directory: Path, state: ShipperState) -> None:
    status = {
        "pid": os.getpid(),
        "shipped_seq": state.shipped_seq,
        "shipped_events": state.shipped_events,
        "drained": state.drained,
        "failing": state.failing,
        "last_error": state.last_error,
        "failures": state.failures,
        "quarantined": state.quarantined,
        "last_quarantine": state.last_quarantine,
    }
    tmp = directory / "status.json.tmp"
    tmp.write_bytes(orjson.dumps(status))
    os.replace(tmp, directory / "status.json")


def read_status(directory: Path) -> dict[str, Any]:
    try:
        status: dict[str, Any] = orjson.loads((directory / "status.json").read_bytes())
    except (FileNotFoundError, orjson.JSONDecodeError):
        return {}
    return status


def _die_with_parent(parent: int) -> None:
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def _until_eof(stream: Any, stop: threading.Event, wake: int) -> None:
    while stream.read(4096):
        pass
    stop.set()
    os.write(wake, b"!")


class SyncLoop:
    """Group commit, awake only while calls arrive: after a nudge, fdatasync at once and then
    after every `interval`; after a quiet interval, one last sync and sleep until the next
    nudge (or a stop). Each sync that may have found new lines wakes the shipper."""

    def __init__(
        self, syncer: Syncer, shipper: Shipper, interval: float, nudge_fd: int, wake_fd: int
    ) -> None:
        self._syncer = syncer
        self._shipper = shipper
        self._interval = interval
        self._nudge_fd = nudge_fd
        self._wake_fd = wake_fd
        os.set_blocking(nudge_fd, False)
        os.set_blocking(wake_fd, False)
        self.syncs = 0

    def run(self, stop: threading.Event, parent: int) -> int:
        fds = [self._nudge_fd, self._wake_fd]
        awake = True  # a journal left by a predecessor is synced and shipped at once
        while not stop.is_set():
            readable, _, _ = select.select(fds, [], [], self._interval if awake else IDLE_CHECK_S)
            if self._wake_fd in readable:
                drain(self._wake_fd)
            nudged = self._nudge_fd in readable and drain(self._nudge_fd)
            self._syncer.sync()
            self.syncs += 1
            if nudged or awake or not readable:
                self._shipper.wake()
            awake = nudged
            if os.getppid() != parent:
                return 1
        return 0


def run(spec: dict[str, Any], stop: threading.Event, wake_fd: int) -> int:
    from gateway.stores.sql import make_engine

    directory = Path(spec["directory"])
    # No ping per checkout (a round trip per batch): a dead connection fails the batch, which
    # is retried on a fresh one.
    engine = make_engine(spec["url"], pre_ping=False)
    shipper = Shipper(
        directory,
        spec["chain_id"],
        engine,
        Signer(bytes.fromhex(spec["key"])),
        ShipperSettings(
            batch_size=spec["batch_size"],
            interval_s=spec["ship_interval_s"],
            checkpoint_s=spec["checkpoint_s"],
        ),
        report=lambda state: write_status(directory, state),
    )
    syncer = Syncer(directory)
    shipper.start()
    loop = SyncLoop(syncer, shipper, spec["fsync_interval_s"], spec["nudge_fd"], wake_fd)
    if loop.run(stop, spec["parent"]):
        return 1
    syncer.sync()
    drained = shipper.stop(spec["drain_s"])
    syncer.sync()
    syncer.close()
    write_status(directory, shipper.state)
    engine.dispose()
    return 0 if drained else 3


def main() -> None:
    stop = threading.Event()
    wake_r, wake_w = os.pipe()

    def terminate(*_: object) -> None:
        stop.set()
        os.write(wake_w, b"!")

    signal.signal(signal.SIGTERM, terminate)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C: the gateway stops us, after draining
    spec = orjson.loads(sys.stdin.buffer.readline())
    _die_with_parent(spec["parent"])
    if spec.get("cpus"):
        try:
            os.sched_setaffinity(0, spec["cpus"])
        except OSError as exc:  # e.g. CPUs outside this container's cpuset
            log.warning("audit worker stays on the gateway's CPUs: %s", exc)

    threading.Thread(target=_until_eof, args=(sys.stdin.buffer, stop, wake_w), daemon=True).start()
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)-7s %(name)s [audit-worker] %(message)s",
    )
    sys.exit(run(spec, stop, wake_r))


if __name__ == "__main__":
    main()
