"""The sink contract: where finished CallRecords go (log, audit, telemetry, rollups).

Sinks are called from the background drain task, never on the request path, with batches.
`write` may raise; the fan-out logs, counts and carries on with the next batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from gateway.call import CallRecord


class Sink(Protocol):
    name: str

    async def write(self, records: Sequence[CallRecord]) -> None: ...

    async def aclose(self) -> None: ...


class DurableSink(Protocol):
    """Written on the request path, before the response completes (the audit journal): one
    cheap append, made durable in the background. `accepting` is False when it cannot take
    more (calls are then refused rather than served unrecorded)."""

    @property
    def accepting(self) -> bool: ...

    def append(self, record: CallRecord) -> None: ...
