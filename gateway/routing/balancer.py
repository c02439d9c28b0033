"""Model alias -> the targets to try, in order. Round-robin until tiers and fallbacks land."""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping

from gateway.call import Target


class RoundRobin:
    """Spreads calls over an alias's targets; the order returned is the order to try them."""

    def __init__(self, models: Mapping[str, tuple[Target, ...]]) -> None:
        self._models = dict(models)
        self._cursors: dict[str, Iterator[int]] = {
            alias: itertools.cycle(range(len(targets))) for alias, targets in models.items()
        }

    def __contains__(self, alias: str) -> bool:
        return alias in self._models

    def aliases(self) -> list[str]:
        return sorted(self._models)

    def configured(self, alias: str) -> tuple[Target, ...]:
        """The alias's targets in config order, without moving the rotation."""
        return self._models[alias]

    def targets(self, alias: str) -> tuple[Target, ...]:
        """All targets of `alias`, rotated so successive calls start at successive targets."""
        targets = self._models[alias]
        if len(targets) == 1:
            return targets
        start = next(self._cursors[alias])
        return targets[start:] + targets[:start]
