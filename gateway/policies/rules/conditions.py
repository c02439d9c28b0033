"""A rule's `match:` compiled into conditions, each a small object that tests a call against the
facts gathered for it once (prompt tokens, local time, budget fractions). Cheap tests come
first; a condition that cannot be evaluated (no budget counter yet) does not hold, and says so
in `explain`."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from zoneinfo import ZoneInfo

from gateway.accounting.request_size import OUTPUT_FIELDS
from gateway.accounting.tokens import TokenCounter, prompt_tokens
from gateway.call import Call
from gateway.policies.rules.schema import DAYS, Match, OneOrMore, Range, TimeWindow


@dataclass(slots=True)
class Facts:
    """What conditions read about one call, each worked out at most once."""

    call: Call
    tokens: TokenCounter
    zone: ZoneInfo
    clock: Callable[[], float]
    budgets: Mapping[str, float | None] = field(default_factory=dict)  # name -> used fraction
    _prompt: int | None = None
    _now: datetime | None = None

    @property
    def prompt_tokens(self) -> int:
        if self._prompt is None:
            self._prompt = prompt_tokens(self.call.endpoint, self.call.body, self.tokens)
        return self._prompt

    @property
    def now(self) -> datetime:
        if self._now is None:
            self._now = datetime.fromtimestamp(self.clock(), self.zone)
        return self._now


def requested_max_tokens(call: Call) -> int | None:
    for name in OUTPUT_FIELDS:
        value = call.body.get(name)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


class Condition:
    """`test` answers True, False, or None (cannot tell: the rule does not match)."""

    name: str = ""

    def test(self, facts: Facts) -> bool | None:
        raise NotImplementedError

    def describe(self, facts: Facts) -> str:
        """What was seen, for `explain`."""
        raise NotImplementedError


def _set(value: OneOrMore) -> frozenset[str]:
    return frozenset((value,) if isinstance(value, str) else value)


class OneOf(Condition):
    """A field of the call (or its caller) is one of the given values."""

    def __init__(self, name: str, values: OneOrMore, read: Callable[[Call], str | None]) -> None:
        self.name = name
        self._values = _set(values)
        self._read = read

    def test(self, facts: Facts) -> bool:
        return self._read(facts.call) in self._values

    def describe(self, facts: Facts) -> str:
        return f"{self.name} is {self._read(facts.call)!r}, wanted one of {sorted(self._values)}"


class Flag(Condition):
    def __init__(self, name: str, wanted: bool, read: Callable[[Call], bool]) -> None:
        self.name = name
        self._wanted = wanted
        self._read = read

    def test(self, facts: Facts) -> bool:
        return self._read(facts.call) is self._wanted

    def describe(self, facts: Facts) -> str:
        return f"{self.name} is {self._read(facts.call)}, wanted {self._wanted}"


class Tags(Condition):
    name = "tags"

    def __init__(self, tags: tuple[str, ...]) -> None:
        self._tags = frozenset(tags)

    def test(self, facts: Facts) -> bool:
        return not self._tags.isdisjoint(facts.call.principal.tags)

    def describe(self, facts: Facts) -> str:
        return f"key tags {list(facts.call.principal.tags)}, wanted any of {sorted(self._tags)}"


class Headers(Condition):
    name = "headers"

    def __init__(self, headers: Mapping[str, str]) -> None:
        self._headers = {k.lower(): v for k, v in headers.items()}

    def test(self, facts: Facts) -> bool:
        for name, wanted in self._headers.items():
            got = facts.call.header(name)
            if got is None or (wanted != "*" and got.strip() != wanted):
                return False
        return True

    def describe(self, facts: Facts) -> str:
        seen = {name: facts.call.header(name) for name in self._headers}
        return f"headers {seen}, wanted {self._headers}"


class Between(Condition):
    def __init__(self, name: str, bounds: Range, read: Callable[[Facts], int | None]) -> None:
        self.name = name
        self._low = bounds.min
        self._high = bounds.max
        self._read = read

    def test(self, facts: Facts) -> bool:
        value = self._read(facts)
        if value is None:
            return False
        return (self._low is None or value >= self._low) and (
            self._high is None or value <= self._high
        )

    def describe(self, facts: Facts) -> str:
        return f"{self.name} is {self._read(facts)}, wanted {self._low}..{self._high}"


class During(Condition):
    name = "time"

    def __init__(self, window: TimeWindow) -> None:
        self._days = frozenset(window.days)
        self._start, self._end = window.span()
        self._text = f"{','.join(window.days)} {window.hours}"

    def test(self, facts: Facts) -> bool:
        now = facts.now
        minute = now.hour * 60 + now.minute
        if self._start <= self._end:
            return DAYS[now.weekday()] in self._days and self._start <= minute < self._end
        # Wraps midnight: the early hours belong to the window that started the day before.
        if minute >= self._start:
            return DAYS[now.weekday()] in self._days
        return minute < self._end and DAYS[(now.weekday() - 1) % 7] in self._days

    def describe(self, facts: Facts) -> str:
        return f"local time {facts.now:%a %H:%M %Z}, wanted {self._text}"


class BudgetUsed(Condition):
    name = "budget"

    def __init__(self, budget: str, at_least: float) -> None:
        self.budget = budget
        self._at_least = at_least

    def test(self, facts: Facts) -> bool | None:
        used = facts.budgets.get(self.budget)
        return None if used is None else used >= self._at_least

    def describe(self, facts: Facts) -> str:
        used = facts.budgets.get(self.budget)
        if used is None:
            return (
                f"budget {self.budget!r}: no counter for this caller in its current window "
                "(it does not apply to them, or nothing was spent yet): cannot tell"
            )
        return f"budget {self.budget!r} used {used:.1%}, wanted at least {self._at_least:.1%}"


def _tools(call: Call) -> bool:
    body = call.body
    return bool(body.get("tools") or body.get("functions"))


def _json_mode(call: Call) -> bool:
    fmt = call.body.get("response_format")
    text = call.body.get("text")  # the Responses API's `text.format`
    if fmt is None and isinstance(text, dict):
        fmt = text.get("format")
    return isinstance(fmt, dict) and fmt.get("type") in ("json_object", "json_schema")


# How each field a condition names is read from a call: "one of these values" fields, then
# yes/no flags. The rule index (index.py) reads calls through the same functions.
VALUE_READERS: dict[str, Callable[[Call], str | None]] = {
    "model": lambda c: c.model,
    "endpoint": lambda c: c.endpoint,
    "key": lambda c: c.principal.name,
    "team": lambda c: c.principal.team,
    "user": lambda c: c.principal.user,
    "org": lambda c: c.principal.org,
}
FLAG_READERS: dict[str, Callable[[Call], bool]] = {
    "stream": lambda c: c.stream,
    "tools": _tools,
    "json_mode": _json_mode,
    "soft_exceeded": lambda c: "budget.soft_exceeded" in c.labels,
}


def compile_match(match: Match) -> list[Condition]:
    """The conditions of one `match:`, cheapest first."""
    out: list[Condition] = []
    for name, read in VALUE_READERS.items():
        values = getattr(match, name)
        if values is not None:
            out.append(OneOf(name, values, read))
    for name, flag in FLAG_READERS.items():
        wanted = getattr(match, name)
        if wanted is not None:
            out.append(Flag(name, wanted, flag))
    if match.tags is not None:
        out.append(Tags(match.tags))
    if match.headers is not None:
        out.append(Headers(match.headers))
    return out + compile_complex(match)


def compile_complex(match: Match) -> list[Condition]:
    """The conditions the rule index (index.py) does not answer by lookup: ranges, the time
    window and a budget's used fraction, cheapest first."""
    out: list[Condition] = []
    if match.max_tokens is not None:
        out.append(Between("max_tokens", match.max_tokens,
                           lambda f: requested_max_tokens(f.call)))  # fmt: skip
    if match.time is not None:
        out.append(During(match.time))
    if match.prompt_tokens is not None:
        out.append(Between("prompt_tokens", match.prompt_tokens, lambda f: f.prompt_tokens))
    if match.budget is not None:
        out.append(BudgetUsed(match.budget.name, match.budget.used_at_least))
    return out
