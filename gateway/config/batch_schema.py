"""The batched tier's settings (`batch:` in tollgate.yaml, docs/batch.md): how much of the
fleet's spare capacity batch work may use, and the limits on what a job may hold."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class BatchConfig(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    # Off: the Files and Batches endpoints answer 404 and no runner starts.
    enabled: bool = True
    # Lines of one job in flight at once, per gateway.
    concurrency: int = Field(4, ge=1, le=256)
    # A line starts only while some replica of its alias has fewer calls in flight (live and
    # batch, the engine's own queue included) than this: batch work uses spare capacity only.
    spare_below: int = Field(2, ge=1, le=10_000)
    # In the last part of its completion window a job runs whatever the load (on the
    # standard tier), rather than miss its deadline.
    rush_fraction: float = Field(0.1, ge=0, le=1)
    lease_seconds: float = Field(30.0, ge=1, le=3600)  # a dead owner's job is taken over after
    poll_seconds: float = Field(5.0, gt=0, le=300)  # how often an idle gateway looks for work
    max_file_bytes: int = Field(200 * 1024 * 1024, ge=1024)
    max_lines: int = Field(50_000, ge=1, le=1_000_000)
    max_window_hours: int = Field(168, ge=1, le=8760)
    # A flex call (`service_tier: "flex"`) waits for spare capacity at most this long, then is
    # served normally (a rule's `defer` action sets its own bound).
    flex_max_wait_seconds: float = Field(30.0, ge=0, le=3600)
