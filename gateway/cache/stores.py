"""Where cache entries live, behind one small Protocol: in this process (the embedded
default) or in Redis (redis_store.py, shared by a fleet). Both bound each namespace's entries
(least recently used go first) and expire them; neither decides what is cached."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from gateway.errors import Fault


def exact_size(value: bytes) -> bytes:
    """A copy holding only its bytes: orjson's output keeps its whole working buffer (~8 KiB
    traced for a 1 KiB answer), which a cache holding 100k of them cannot afford."""
    return bytes(memoryview(value))


class StoreFailure(Fault):
    """The store could not answer in time: the cache stage counts it and treats it as a miss."""


@dataclass(frozen=True, slots=True)
class VectorItem:
    """A semantic entry as every gateway's vector index learns of it."""

    namespace: str
    bucket: str
    digest: str
    vector: bytes  # float32, unit length


class EntryStore(Protocol):
    # Whether other processes write to it (then the vector index tails what they publish).
    shared: bool

    async def get(self, namespace: str, digest: str) -> bytes | None: ...

    async def put(
        self, namespace: str, digest: str, value: bytes, ttl_s: float, max_entries: int
    ) -> None: ...

    async def publish(self, item: VectorItem, ttl_s: float) -> None:
        """Tells the other gateways' indexes of a semantic entry (nothing to do in-process)."""
        ...

    async def vectors(self, cursor: str) -> tuple[list[VectorItem], str]:
        """Semantic entries published since `cursor` ("" for all still kept), and the next
        cursor: how an index catches up at start-up and stays in step."""
        ...

    async def aclose(self) -> None: ...


class MemoryEntries:
    """Entries in this process: an LRU per namespace, bounded by count, and an overall bound
    in bytes so that many namespaces cannot outgrow the process."""

    shared = False

    def __init__(self, max_bytes: int = 256 * 1024 * 1024,
                 clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        self._spaces: dict[str, OrderedDict[str, tuple[float, bytes]]] = {}
        self._all: OrderedDict[tuple[str, str], int] = OrderedDict()  # global LRU: sizes
        self._bytes = 0
        self._max_bytes = max_bytes
        self._clock = clock

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def namespaces(self) -> list[str]:
        """The namespaces holding entries now (each tenant's is its own)."""
        return list(self._spaces)

    def digests(self, namespace: str) -> list[str]:
        """The keys of a namespace's entries, least recently used first."""
        return list(self._spaces.get(namespace, ()))

    def __len__(self) -> int:
        return len(self._all)

    async def get(self, namespace: str, digest: str) -> bytes | None:
        space = self._spaces.get(namespace)
        found = space.get(digest) if space is not None else None
        if found is None:
            return None
        assert space is not None
        expires, value = found
        if expires <= self._clock():
            self._drop(namespace, digest)
            return None
        space.move_to_end(digest)
        self._all.move_to_end((namespace, digest))
        return value

    async def put(
        self, namespace: str, digest: str, value: bytes, ttl_s: float, max_entries: int
    ) -> None:
        if len(value) > self._max_bytes:
            return
        value = exact_size(value)
        space = self._spaces.setdefault(namespace, OrderedDict())
        if digest in space:
            self._drop(namespace, digest)
            space = self._spaces.setdefault(namespace, OrderedDict())
        space[digest] = (self._clock() + ttl_s, value)
        self._all[(namespace, digest)] = len(value)
        self._bytes += len(value)
        while len(space) > max_entries:
            self._drop(namespace, next(iter(space)))
        while self._bytes > self._max_bytes:
            oldest = next(iter(self._all))
            self._drop(*oldest)

    def _drop(self, namespace: str, digest: str) -> None:
        space = self._spaces.get(namespace)
        if space is None or space.pop(digest, None) is None:
            return
        self._bytes -= self._all.pop((namespace, digest), 0)
        if not space:
            del self._spaces[namespace]

    async def publish(self, item: VectorItem, ttl_s: float) -> None:
        return None

    async def vectors(self, cursor: str) -> tuple[list[VectorItem], str]:
        return [], cursor

    async def aclose(self) -> None:
        return None
