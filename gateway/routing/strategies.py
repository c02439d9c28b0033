"""How a tier's replicas are ordered for a call: the first is where it goes, the rest are where
a retry goes. Strategies are plugins, named in the config (`strategy:`) and found like
policies: the built-ins, then the `tollgate.routing` entry-point group. One instance per tier
per runtime, made as `cls(settings)` (the config's `routing:` settings a strategy may read);
`order` is called on the request path with the call, must not block and must be cheap.

    least_outstanding  power of two choices on load (in flight, or what the engine reports);
                       the default: it needs no tuning and avoids herding on one replica
    round_robin        each replica in turn
    weighted           a random pick in proportion to each replica's `weight`
    prefix_aware       where the prompt's prefix is already cached, within a load window
                       (prefix_aware.py)
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar, Protocol

from gateway.call import Call
from gateway.config import plugins
from gateway.config.plugins import StrategyLoadError as StrategyLoadError  # re-exported
from gateway.routing.state import ReplicaState
from gateway.routing.table import Replica


class Strategy(Protocol):
    name: ClassVar[str]

    def __init__(self, settings: Any = None) -> None:
        """`settings`: the config's routing settings (PrefixSettings); most ignore them."""

    def order(
        self,
        replicas: Sequence[Replica],
        states: Sequence[ReplicaState],
        rng: random.Random,
        call: Call | None = None,
    ) -> Iterator[int]:
        """Indexes into `replicas`, the one to use first first; consumed lazily (a retry asks
        for the next one only when it needs it), so later ones may read newer state."""
        ...


class LeastOutstanding:
    """Two replicas drawn at random, the less loaded one used (ties: the first drawn, itself
    random); the rest, least loaded first, for retries."""

    name: ClassVar[str] = "least_outstanding"

    def __init__(self, settings: object = None) -> None:
        pass

    def order(
        self,
        replicas: Sequence[Replica],
        states: Sequence[ReplicaState],
        rng: random.Random,
        call: Call | None = None,
    ) -> Iterator[int]:
        count = len(replicas)
        if count == 1:
            yield 0
            return
        a, b = rng.sample(range(count), 2)
        first = b if states[b].load < states[a].load else a
        yield first
        rest = [i for i in range(count) if i != first]
        rest.sort(key=lambda i: states[i].load)
        yield from rest


class RoundRobin:
    name: ClassVar[str] = "round_robin"

    def __init__(self, settings: object = None) -> None:
        self._next = 0

    def order(
        self,
        replicas: Sequence[Replica],
        states: Sequence[ReplicaState],
        rng: random.Random,
        call: Call | None = None,
    ) -> Iterator[int]:
        count = len(replicas)
        start = self._next % count
        self._next = start + 1
        for i in range(count):
            yield (start + i) % count


class Weighted:
    name: ClassVar[str] = "weighted"

    def __init__(self, settings: object = None) -> None:
        pass

    def order(
        self,
        replicas: Sequence[Replica],
        states: Sequence[ReplicaState],
        rng: random.Random,
        call: Call | None = None,
    ) -> Iterator[int]:
        indexes = list(range(len(replicas)))
        first = rng.choices(indexes, weights=[r.weight for r in replicas])[0]
        yield first
        yield from sorted((i for i in indexes if i != first), key=lambda i: -replicas[i].weight)


def resolve(name: str) -> type[Strategy]:
    """The strategy class registered under `name` (config/plugins.py finds and checks it);
    StrategyLoadError (a config error) if there is none or it does not have `order`."""
    found: type[Strategy] = plugins.strategy(name)
    return found
