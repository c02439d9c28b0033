"""Which budget alert thresholds a call's reservation shows crossed.

Read off the counter values the reservation already returned (no store round-trip): what the
budget's subject had used before this call (committed spend plus calls in flight), as a
percentage of the limit. The call's own worst case is left out, so a threshold never fires on
a reservation that will mostly be released. Each (budget, subject, window) reports its highest
crossed threshold once per process; the sink makes it once per fleet (alerting.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from gateway.accounting.limits import Line
from gateway.accounting.windows import Window


@dataclass(frozen=True, slots=True)
class Crossing:
    """A budget's use passed `threshold` percent of its limit in `window`."""

    budget: str
    subject: str
    window: Window
    threshold: int
    unit: str  # usd (nano-dollars) or tokens
    used: int
    limit: int
    enforcement: str
    notify: tuple[str, ...] | None


class AlertSink(Protocol):
    """Where crossings go; must not block (called on the request path)."""

    def crossed(self, crossing: Crossing) -> None: ...


class AlertWatch:
    def __init__(self, sink: AlertSink) -> None:
        self._sink = sink
        self._fired: dict[tuple[str, str, str, str], int] = {}

    def observe(self, lines: Sequence[Line], values: Sequence[int], own: bool = True) -> None:
        """`values`: the counters after this call's charge (`own`) or before it (a refusal)."""
        for line, value in zip(lines, values, strict=True):
            if not line.alert_at or line.kind != "budget" or not line.limit:
                continue
            used = value - line.charge.amount if own else value
            percent = used * 100 // line.limit
            if percent < line.alert_at[0]:
                continue
            top = max(t for t in line.alert_at if t <= percent)
            key = (line.rule, line.subject, line.window.tag, line.unit)
            if self._fired.get(key, 0) >= top:
                continue
            if len(self._fired) > 100_000:
                self._fired.clear()
            self._fired[key] = top
            self._sink.crossed(
                Crossing(
                    line.rule, line.subject, line.window, top, line.unit, used, line.limit,
                    "hard" if line.hard else "soft", line.notify,
                )
            )  # fmt: skip
