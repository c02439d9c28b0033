"""The audit log as the gateway runs it: a journal on the request path, a shipper behind it."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from gateway.audit.config import AuditConfig
from gateway.audit.journal import Journal, JournalSettings, Slot
from gateway.audit.shipper import Shipper, ShipperSettings
from gateway.audit.signing import Signer

log = logging.getLogger("gateway.audit")
MB = 1024 * 1024


def journal_dir(config: AuditConfig, data_dir: Path) -> Path:
    """TOLLGATE_AUDIT_DIR, else `audit.journal_dir`, else `audit-journal/` in the data dir."""
    override = os.environ.get("TOLLGATE_AUDIT_DIR")
    if override:
        return Path(override)
    return Path(config.journal_dir) if config.journal_dir else data_dir / "audit-journal"


class AuditLog:
    def __init__(self, journal: Journal, shipper: Shipper, drain_s: float) -> None:
        self.journal = journal
        self.shipper = shipper
        self._drain_s = drain_s

    @classmethod
    def open(cls, config: AuditConfig, engine: Engine, key: bytes, data_dir: Path) -> AuditLog:
        """Blocking (file locks, recovery): call it from a thread."""
        slot = Slot.acquire(journal_dir(config, data_dir))
        journal = Journal(
            slot,
            JournalSettings(
                fsync_interval_s=config.fsync_interval_ms / 1000,
                segment_bytes=config.segment_mb * MB,
                max_bytes=config.max_journal_mb * MB,
                alarm_fraction=config.alarm_fraction,
                client_ip=config.client_ip,
                user_agent=config.user_agent,
            ),
        )
        journal.open()
        shipper = Shipper(
            journal,
            engine,
            Signer(key),
            ShipperSettings(
                batch_size=config.batch_size,
                interval_s=config.ship_interval_ms / 1000,
                checkpoint_s=config.checkpoint_seconds,
            ),
        )
        shipper.start()
        log.info(
            "audit journal %s (chain %s): %d bytes waiting to ship",
            slot.directory,
            slot.chain_id,
            journal.pending_bytes,
        )
        return cls(journal, shipper, config.drain_seconds)

    def close(self) -> None:
        """Blocking: drains the journal to SQL (bounded by drain_seconds), then releases it."""
        self.shipper.stop(self._drain_s)
        self.journal.close()
        self.journal.slot.release()

    def status(self) -> dict[str, Any]:
        state = self.shipper.state
        return {
            "chain": self.journal.slot.chain_id,
            "database": "unreachable" if state.failing else "ok",
            "last_error": state.last_error,
            "journaled_seq": self.journal.seq,
            "shipped_seq": state.shipped_seq,
            "lag_events": self.shipper.lag,
            "journal_pending_bytes": self.journal.pending_bytes,
            "journal_max_bytes": self.journal.settings.max_bytes,
            "journal_alarm": self.journal.alarm,
            "accepting": self.journal.accepting,
            "write_failures": self.journal.failed,
        }
