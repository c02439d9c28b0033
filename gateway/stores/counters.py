"""The counter store Protocol: atomic reserve-then-settle counters and spend tallies.

Budgets and rate limits are counters that must hold across every gateway process. A call first
*reserves* its worst case against all the counters on its principal's path in one atomic step
(all fit, or nothing changes), then *settles* the difference once the real usage is known.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from gateway.errors import Fault


class StoreUnavailable(Fault):
    """The shared store did not answer (connection refused, timeout, failover in progress)."""


class StoreRejected(Fault):
    """The store answered but refused the command (a script error on a value it cannot hold).
    Not an outage: only the call or settlement that carried the value is affected."""


@dataclass(frozen=True, slots=True)
class Charge:
    """Add `amount` to counter `key`; refuse the whole reservation if it would pass `limit`
    (None: count without limit). `ttl` seconds keeps the counter past its window (0: forever)."""

    key: str
    amount: int
    limit: int | None
    ttl: int


@dataclass(frozen=True, slots=True)
class Refused:
    """The reservation did not fit: the first charge that would have passed its limit."""

    index: int
    current: int


@dataclass(frozen=True, slots=True)
class Tally:
    """Add `amount` to field `field` of the spend table `table` (kept for `ttl` seconds)."""

    table: str
    field: str
    amount: int
    ttl: int


@dataclass(frozen=True, slots=True)
class HoldTag:
    """Names a reservation in a shared store so that, if its gateway dies before settling it,
    any other gateway releases it once `expires_at` (epoch seconds) has passed."""

    id: str
    expires_at: float


@dataclass(frozen=True, slots=True)
class Settlement:
    """A finished call: per counter (key, reserved, actual, ttl)."""

    hold: HoldTag | None
    lines: tuple[tuple[str, int, int, int], ...]


class CounterStore(Protocol):
    name: str

    async def reserve(
        self, charges: Sequence[Charge], hold: HoldTag | None = None
    ) -> Refused | list[int]:
        """All charges at once, or none: the counters' new values, or what did not fit."""
        ...

    async def release(self, settlements: Sequence[Settlement]) -> None:
        """Replace reservations by actual amounts (each hold released exactly once)."""
        ...

    async def sweep_holds(self, now: float) -> int:
        """Release holds that expired unsettled; how many."""
        ...

    async def settle(self, deltas: Sequence[Charge], tallies: Sequence[Tally]) -> None:
        """Apply corrections (negative to release) without limit checks, and add spend."""
        ...

    async def seed(self, key: str, value: int, ttl: int) -> bool:
        """Set a counter that does not exist yet (a budget new in its window starts from what
        its subject already spent); an existing counter is left alone. True if it was set."""
        ...

    async def values(self, keys: Sequence[str]) -> list[int]: ...

    async def table(self, table: str) -> dict[str, int]: ...

    async def ping(self) -> None: ...

    async def aclose(self) -> None: ...
