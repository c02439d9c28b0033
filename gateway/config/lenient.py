"""Schema validation that reports every problem and still yields the rest of the config.

A strict model rejects a file at its first invalid section, which would hide every later check
(references, prices, policy options) behind one typo. Here the invalid items are reported, then
set aside one by one (a backend, a model, a list entry, else the smallest enclosing key) until
what is left validates, so the loader can go on checking it. Items set aside are remembered:
references to them are not reported again as unknown, and list positions map back to the file.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ValidationError

from gateway.config.yamlmarks import Located

M = TypeVar("M", bound=BaseModel)
Loc = tuple[str | int, ...]
# Where an invalid item is cut out: a named entry of these mappings, an entry of these lists.
_NAMED = {("backends",), ("models",)}
_LISTS = {
    ("policies",),
    ("pricing",),
    ("policy_files",),
    ("budgets",),
    ("rate_limits",),
    ("limits", "budgets"),
    ("limits", "rate_limits"),
    ("auth", "keys"),
}
_MAX_ROUNDS = 8


@dataclass
class SetAside:
    """What was cut out of the data to make the rest validate."""

    names: dict[Loc, set[str]] = field(default_factory=dict)  # ("backends",) -> {"gpu-a"}
    kept: dict[Loc, list[int]] = field(default_factory=dict)  # list -> original indexes kept
    sections: set[Loc] = field(default_factory=set)  # whole keys dropped to their defaults

    def named(self, section: str) -> set[str]:
        return self.names.get((section,), set())

    def original(self, loc: Loc) -> Loc:
        """A path into the validated (cut) data, as a path into the file."""
        out: list[str | int] = []
        for part in loc:
            kept = self.kept.get(tuple(out))
            if isinstance(part, int) and kept is not None and part < len(kept):
                part = kept[part]
            out.append(part)
        return tuple(out)

    def touched(self, *prefix: str | int) -> bool:
        """Whether anything under (or holding) `prefix` was cut out."""
        cut = [
            *((*section, name) for section, names in self.names.items() for name in names),
            *self.kept,
            *self.sections,
        ]
        return any(loc[: len(prefix)] == prefix or prefix[: len(loc)] == loc for loc in cut)


def _order(loc: Loc) -> tuple[int, tuple[tuple[int, int | str], ...]]:
    """Deepest first, and later list entries before earlier ones (indexes stay valid)."""
    return len(loc), tuple((0, p) if isinstance(p, int) else (1, p) for p in loc)


def validate_leniently(
    located: Located,
    model: type[M],
    describe: Callable[[Located, Loc, Any], str],
) -> tuple[M | None, list[str], SetAside]:
    """The model from the data (None when even the cut-down data cannot make one), every
    schema problem (each described once, where it is in the file), and what was set aside."""
    data = located.data if located.data is not None else {}
    aside = SetAside()
    problems: list[str] = []
    seen: set[str] = set()
    for _ in range(_MAX_ROUNDS):
        try:
            return model.model_validate_json(orjson.dumps(data, default=str)), problems, aside
        except ValidationError as exc:
            errors = exc.errors()
        for err in errors:
            text = describe(located, aside.original(tuple(err["loc"])), err)
            if text not in seen:
                seen.add(text)
                problems.append(text)
        if not isinstance(data, dict):
            return None, problems, aside
        data = copy.deepcopy(data) if data is located.data else data
        cut = {_cut_point(tuple(err["loc"]), data) for err in errors}
        if () in cut:
            return None, problems, aside
        for loc in sorted(cut, key=_order, reverse=True):
            _remove(data, loc, aside)
    return None, problems, aside


def _cut_point(loc: Loc, data: dict[str, Any]) -> Loc:
    """The item an error belongs to: a named entry, a list entry, else the key holding it."""
    for depth in range(len(loc) - 1, 0, -1):
        parent, item = loc[:depth], loc[depth]
        if parent in _NAMED and isinstance(item, str):
            return (*parent, item)
        if parent in _LISTS and isinstance(item, int):
            return (*parent, item)
    if len(loc) >= 2 and isinstance(_get(data, loc[:1]), dict) and _get(data, loc[:2]) is not None:
        return loc[:2]
    return loc[:1]


def _get(data: Any, loc: Loc) -> Any:
    for part in loc:
        if isinstance(data, dict) and isinstance(part, str):
            data = data.get(part)
        elif isinstance(data, list) and isinstance(part, int) and part < len(data):
            data = data[part]
        else:
            return None
    return data


def _remove(data: dict[str, Any], loc: Loc, aside: SetAside) -> None:
    parent = _get(data, loc[:-1]) if len(loc) > 1 else data
    last = loc[-1]
    if isinstance(parent, dict) and isinstance(last, str) and last in parent:
        del parent[last]
        if loc[:-1] in _NAMED:
            aside.names.setdefault(loc[:-1], set()).add(last)
        else:
            aside.sections.add(loc)
    elif isinstance(parent, list) and isinstance(last, int) and last < len(parent):
        kept = aside.kept.setdefault(loc[:-1], list(range(len(parent))))
        del parent[last]
        del kept[last]
    elif len(loc) > 1:
        _remove(data, loc[:-1], aside)
