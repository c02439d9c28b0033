"""Calendar-aligned budget windows in a configured time zone.

A window is named by the instant it started (epoch seconds), so every gateway process agrees on
which counter a call belongs to without talking to the others; daylight-saving days are 23 or
25 hours long, as a finance team expects of "per day".
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

WindowKind = Literal["minute", "hour", "day", "week", "month", "total"]
WINDOW_KINDS: tuple[WindowKind, ...] = ("minute", "hour", "day", "week", "month", "total")


@dataclass(frozen=True, slots=True)
class Window:
    kind: WindowKind
    start: int  # epoch seconds; 0 for "total"
    end: int | None  # epoch seconds when it resets; None for "total"

    @property
    def tag(self) -> str:
        return f"{self.kind}:{self.start}"

    def seconds_left(self, now: float) -> int:
        if self.end is None:
            return 0
        return max(1, int(self.end - now + 0.999))

    def describe(self, zone: ZoneInfo) -> str:
        if self.end is None:
            return "total (never resets)"
        resets = datetime.fromtimestamp(self.end, zone).isoformat()
        return f"{self.kind} window, resets at {resets}"


def window_at(kind: WindowKind, now: float, zone: ZoneInfo) -> Window:
    """The window of `kind` that contains `now` (epoch seconds), aligned in `zone`."""
    if kind == "total":
        return Window("total", 0, None)
    if kind == "minute":
        start = int(now // 60 * 60)
        return Window("minute", start, start + 60)
    local = datetime.fromtimestamp(now, zone)
    if kind == "hour":
        offset = _offset(local)
        begin = int((now + offset) // 3600 * 3600 - offset)
        return Window("hour", begin, begin + 3600)
    day = local.replace(hour=0, minute=0, second=0, microsecond=0, tzinfo=None)
    if kind == "day":
        return _between(kind, day, day + timedelta(days=1), zone)
    if kind == "week":
        monday = day - timedelta(days=day.weekday())
        return _between(kind, monday, monday + timedelta(days=7), zone)
    first = day.replace(day=1)
    following = (first + timedelta(days=32)).replace(day=1)
    return _between(kind, first, following, zone)


def _offset(local: datetime) -> int:
    delta = local.utcoffset()
    return int(delta.total_seconds()) if delta is not None else 0


def _between(kind: WindowKind, begin: datetime, end: datetime, zone: ZoneInfo) -> Window:
    """Local wall-clock midnights (naive) -> epoch seconds, read in `zone`."""
    first = begin.replace(tzinfo=zone).timestamp()
    last = end.replace(tzinfo=zone).timestamp()
    return Window(kind, int(first), int(last))


class WindowCache:
    """The current window per kind, recomputed only when it ends (zone arithmetic is the
    costly part of planning a call, and windows change once an hour at most)."""

    __slots__ = ("_current", "_zone")

    def __init__(self, zone: ZoneInfo) -> None:
        self._zone = zone
        self._current: dict[WindowKind, Window] = {}

    def at(self, kind: WindowKind, now: float) -> Window:
        window = self._current.get(kind)
        if window is not None and window.start <= now and (window.end is None or now < window.end):
            return window
        window = window_at(kind, now, self._zone)
        self._current[kind] = window
        return window
