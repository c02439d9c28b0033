"""Which rules a call matches, without testing each rule in turn.

Most conditions are "this field is one of these values" (model, endpoint, caller, a header,
a flag, a tag). For each such field the index keeps, per value, the set of rules (a bitmask, bit
i for rule i) whose condition on that field accepts it; rules with no condition on the field
accept every value. A call's candidates are then one dictionary lookup and one AND per field,
whatever the number of rules; only the candidates' other conditions (ranges, time, budget)
are tested, in rule order. 50 rules cost about what 5 did (bench/rules_work.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from gateway.call import Call
from gateway.policies.rules.conditions import (
    FLAG_READERS,
    VALUE_READERS,
    Condition,
    Facts,
    compile_complex,
)
from gateway.policies.rules.schema import Match

Value = str | bool | None


# Field -> how a call's value is read (the conditions' own readers).
READERS: dict[str, Callable[[Call], Value]] = {**VALUE_READERS, **FLAG_READERS}
_STAR = "*"


@dataclass(slots=True)
class _Field:
    """One field's masks: rules that ignore it, rules that want it present, rules by value."""

    free: int = 0
    present: int = 0
    by_value: dict[Value, int] = field(default_factory=dict)

    def mask(self, value: Value) -> int:
        out = self.free | self.by_value.get(value, 0)
        if value is not None:
            out |= self.present
        return out


def _values(value: str | tuple[str, ...] | bool) -> tuple[Value, ...]:
    return (value,) if isinstance(value, str | bool) else value


class RuleIndex:
    def __init__(self, matches: Sequence[Match]) -> None:
        self._count = len(matches)
        self._all = (1 << self._count) - 1
        self._fields: dict[str, _Field] = {}
        self._headers: dict[str, _Field] = {}
        self._tags = _Field()
        self._complex: list[list[Condition]] = []
        for i, match in enumerate(matches):
            self._add(i, match)
        self._finish()

    def _add(self, i: int, match: Match) -> None:
        bit = 1 << i
        for name in READERS:
            wanted = getattr(match, name)
            if wanted is None:
                continue
            slot = self._fields.setdefault(name, _Field())
            for value in _values(wanted):
                slot.by_value[value] = slot.by_value.get(value, 0) | bit
        for name, wanted in (match.headers or {}).items():
            slot = self._headers.setdefault(name.lower(), _Field())
            if wanted == _STAR:
                slot.present |= bit
            else:
                slot.by_value[wanted] = slot.by_value.get(wanted, 0) | bit
        if match.tags is not None:
            for tag in match.tags:
                self._tags.by_value[tag] = self._tags.by_value.get(tag, 0) | bit
        self._complex.append(compile_complex(match))

    def _finish(self) -> None:
        """Each field's `free`: the rules with no condition on it."""
        for slot in (*self._fields.values(), *self._headers.values(), self._tags):
            constrained = slot.present
            for mask in slot.by_value.values():
                constrained |= mask
            slot.free = self._all & ~constrained

    def candidates(self, call: Call) -> int:
        """The rules whose field conditions all hold (bit i: rule i)."""
        mask = self._all
        for name, slot in self._fields.items():
            mask &= slot.mask(READERS[name](call))
            if not mask:
                return 0
        if self._headers:
            seen: dict[str, str] = {}
            for key, value in call.raw_headers:
                name = key.decode("latin-1")
                if name in self._headers:
                    seen[name] = value.decode("latin-1").strip()
            for name, slot in self._headers.items():
                mask &= slot.mask(seen.get(name))
        if self._tags.by_value:
            tags = self._tags
            allowed = tags.free
            for tag in call.principal.tags:
                allowed |= tags.by_value.get(tag, 0)
            mask &= allowed
        return mask

    def matching(self, facts: Facts) -> Iterator[int]:
        """The rules the call matches, in order (their other conditions tested lazily)."""
        mask = self.candidates(facts.call)
        while mask:
            low = mask & -mask
            i = low.bit_length() - 1
            mask ^= low
            if all(c.test(facts) for c in self._complex[i]):
                yield i
