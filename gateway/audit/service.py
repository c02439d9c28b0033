"""The audit log as a gateway process runs it: the journal on the request path, and the audit
worker process (worker.py) behind it, watched and restarted if it dies."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from gateway.audit.journal import Journal, JournalSettings
from gateway.audit.nudge import Nudge
from gateway.audit.segments import Slot
from gateway.audit.worker import read_status
from gateway.config.audit_schema import AuditConfig

log = logging.getLogger("gateway.audit")
MB = 1024 * 1024
TICK_S = 0.25
IDLE_TICK_S = 2.0  # nothing appended and nothing waiting: look less often


def journal_dir(config: AuditConfig, data_dir: Path) -> Path:
    """TOLLGATE_AUDIT_DIR, else `audit.journal_dir`, else `audit-journal/` in the data dir."""
    override = os.environ.get("TOLLGATE_AUDIT_DIR")
    if override:
        return Path(override)
    return Path(config.journal_dir) if config.journal_dir else data_dir / "audit-journal"


def worker_cpus(config: AuditConfig) -> list[int] | None:
    """Where the worker runs: as configured; else, when this gateway process is pinned to some
    CPUs of the machine, on the others (a pinned core is there to serve requests: the worker on
    the gateway's own core cost -14% max req/s, beside it -3.5%, bench/audit.py); else
    anywhere."""
    if config.worker_cpus:
        return list(config.worker_cpus)
    mine = os.sched_getaffinity(0)
    rest = set(range(os.cpu_count() or 1)) - mine
    return sorted(rest) if rest else None


class AuditWorker:
    """The worker process for one journal slot."""

    def __init__(self, spec: dict[str, Any], nudge: Nudge) -> None:
        self._spec = {**spec, "nudge_fd": nudge.read_fd}
        self._nudge = nudge
        self.proc: subprocess.Popen[bytes] | None = None
        self.restarts = 0
        self._started = 0.0

    def start(self) -> AuditWorker:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway.audit.worker"],
            stdin=subprocess.PIPE,
            close_fds=True,
            pass_fds=(self._nudge.read_fd,),
        )
        assert self.proc.stdin is not None
        self.proc.stdin.write(orjson.dumps(self._spec) + b"\n")
        self.proc.stdin.flush()  # kept open: closing it is how the worker is told to stop
        self._started = time.monotonic()
        return self

    def ensure_running(self) -> None:
        """Restarts a worker that died (at most once a second): its journal is intact."""
        if self.proc is None or self.proc.poll() is None:
            return
        if time.monotonic() - self._started < 1.0:
            return
        self.restarts += 1
        log.error("audit worker exited with %s; restarting it", self.proc.returncode)
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.start()

    def stop(self, drain_s: float) -> bool:
        if self.proc is None:
            return True
        if self.proc.poll() is None:
            with contextlib.suppress(OSError):
                assert self.proc.stdin is not None
                self.proc.stdin.close()
            try:
                self.proc.wait(drain_s + 5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode == 0

    def close(self) -> None:
        self._nudge.close()


@dataclass(frozen=True, slots=True)
class AuditStatus:
    """Where the audit log stands (/readyz, /metrics): the journal, the worker shipping it,
    the database, and the events the database refused (kept in tollgate_audit_quarantine: an
    alarm)."""

    chain: str
    database: str  # ok | unreachable
    last_error: str | None
    worker: str  # running | stopped
    worker_restarts: int
    journaled_seq: int
    shipped_seq: int
    lag_events: int
    journal_pending_bytes: int
    journal_max_bytes: int
    journal_alarm: bool
    accepting: bool
    write_failures: int
    quarantined: int
    last_quarantine: str | None


class AuditLog:
    def __init__(self, journal: Journal, worker: AuditWorker, drain_s: float) -> None:
        self.journal = journal
        self.worker = worker
        self._drain_s = drain_s
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def open(cls, config: AuditConfig, url: str, key: bytes, data_dir: Path) -> AuditLog:
        """Blocking (file locks, recovery, a process start): call it from a thread."""
        slot = Slot.acquire(journal_dir(config, data_dir))
        nudge = Nudge(config.fsync_interval_ms / 1000)
        journal = Journal(
            slot,
            JournalSettings(
                segment_bytes=config.segment_mb * MB,
                max_bytes=config.max_journal_mb * MB,
                alarm_fraction=config.alarm_fraction,
                client_ip=config.client_ip,
                user_agent=config.user_agent,
            ),
            nudge,
        )
        journal.open()
        spec = {
            "directory": str(slot.directory),
            "chain_id": slot.chain_id,
            "url": url,
            "key": key.hex(),
            "parent": os.getpid(),
            "fsync_interval_s": config.fsync_interval_ms / 1000,
            "batch_size": config.batch_size,
            "ship_interval_s": config.ship_interval_ms / 1000,
            "checkpoint_s": config.checkpoint_seconds,
            "drain_s": config.drain_seconds,
            "cpus": worker_cpus(config),
        }
        worker = AuditWorker(spec, nudge).start()
        log.info(
            "audit journal %s (chain %s): %d bytes waiting to ship",
            slot.directory,
            slot.chain_id,
            journal.pending_bytes,
        )
        return cls(journal, worker, config.drain_seconds)

    def start_monitor(self) -> None:
        self._task = asyncio.create_task(self._monitor(), name="tollgate-audit-monitor")

    async def _monitor(self) -> None:
        seen = -1
        while True:
            journal = self.journal
            idle = journal.seq == seen and journal.pending_bytes == 0
            await asyncio.sleep(IDLE_TICK_S if idle else TICK_S)
            seen = journal.seq
            try:
                journal.refresh()
                self.worker.ensure_running()
            except Exception:
                log.exception("audit monitor tick failed")

    def close(self) -> None:
        """Blocking: the worker drains the journal to SQL (bounded by drain_seconds)."""
        if self._task is not None:
            self._task.cancel()
        drained = self.worker.stop(self._drain_s)
        if not drained:
            log.error("audit journal not fully drained; the rest ships on the next start")
        self.journal.close()
        self.journal.slot.release()
        self.worker.close()

    def status(self) -> AuditStatus:
        worker = read_status(self.journal.directory)
        shipped = int(worker.get("shipped_seq", 0))
        alive = self.worker.proc is not None and self.worker.proc.poll() is None
        return AuditStatus(
            chain=self.journal.slot.chain_id,
            database="unreachable" if worker.get("failing") else "ok",
            last_error=worker.get("last_error"),
            worker="running" if alive else "stopped",
            worker_restarts=self.worker.restarts,
            journaled_seq=self.journal.seq,
            shipped_seq=shipped,
            lag_events=max(self.journal.seq - shipped, 0),
            journal_pending_bytes=self.journal.pending_bytes,
            journal_max_bytes=self.journal.settings.max_bytes,
            journal_alarm=self.journal.alarm,
            accepting=self.journal.accepting,
            write_failures=self.journal.failed,
            quarantined=int(worker.get("quarantined", 0)),
            last_quarantine=worker.get("last_quarantine"),
        )
