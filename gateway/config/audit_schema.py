"""The `audit:` section of tollgate.yaml (docs/audit.md)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class AuditConfig(BaseModel):
    """The audit log: journaled locally on every call, shipped to the database (`database.url`,
    or TOLLGATE_DATABASE_URL) in batches."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    enabled: bool = True
    # Default: `audit-journal/` in the data directory (beside the SQLite file, else .tollgate/).
    journal_dir: str | None = None
    fsync_interval_ms: float = Field(5.0, gt=0, le=1000)
    segment_mb: int = Field(16, ge=1)
    max_journal_mb: int = Field(1024, ge=1)
    alarm_fraction: float = Field(0.8, gt=0, lt=1)
    batch_size: int = Field(2000, ge=1, le=20_000)
    ship_interval_ms: float = Field(250.0, gt=0)
    checkpoint_seconds: float = Field(60.0, gt=0)
    drain_seconds: float = Field(10.0, ge=0)
    signing_key_env: str | None = None
    # CPUs the audit worker process runs on. Default: when the gateway process is pinned to
    # some CPUs, the others (a pinned core is there to serve requests); otherwise any.
    worker_cpus: tuple[int, ...] | None = None
    client_ip: bool = True
    user_agent: bool = True
