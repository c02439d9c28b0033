"""The semantic cache's vector index: per namespace, per bucket (everything about a request
but its last user turn, hashed), the unit vectors of the questions answered.

Most buckets are small (a conversation's history makes its own bucket): they are searched
exactly with one matrix product. A bucket past BRUTE_MAX entries moves to an HNSW graph
(usearch: maintained, a small wheel with no native build on every platform, supports removal
and f16 storage; hnswlib needs a compiler here and faiss-cpu's graph cannot remove). Each
namespace keeps at most `max_entries` vectors, least recently added going first.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
from numpy.typing import NDArray

BRUTE_MAX = 2048
_SEARCHED = 4  # candidates checked per lookup (the facts guard may refuse the nearest)

Vector = NDArray[np.float32]


class Candidate(NamedTuple):
    digest: str
    similarity: float


def unit(values: list[float] | Vector) -> Vector | None:
    vector = np.asarray(values, dtype=np.float32)
    norm = float(np.linalg.norm(vector))
    if vector.ndim != 1 or not vector.size or not np.isfinite(norm) or norm == 0.0:
        return None
    return vector / norm


class _Bucket:
    __slots__ = ("digests", "dims", "hnsw", "ids", "matrix", "rows")

    def __init__(self, dims: int) -> None:
        self.dims = dims
        self.matrix: Vector = np.zeros((8, dims), dtype=np.float32)
        self.rows: list[str] = []  # row -> digest (brute force)
        self.ids: dict[str, int] = {}  # digest -> row, or label in the graph
        self.digests: dict[int, str] = {}  # graph label -> digest
        self.hnsw: object | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def add(self, digest: str, vector: Vector, labels: itertools.count[int]) -> None:
        if digest in self.ids:
            self.remove(digest)
        if self.hnsw is not None:
            label = next(labels)
            self.hnsw.add(label, vector)  # type: ignore[attr-defined]
            self.ids[digest], self.digests[label] = label, digest
            return
        row = len(self.rows)
        if row == len(self.matrix):
            self.matrix = np.concatenate([self.matrix, np.zeros_like(self.matrix)])
        self.matrix[row] = vector
        self.rows.append(digest)
        self.ids[digest] = row
        if len(self.rows) > BRUTE_MAX:
            self._to_graph(labels)

    def remove(self, digest: str) -> None:
        where = self.ids.pop(digest, None)
        if where is None:
            return
        if self.hnsw is not None:
            self.hnsw.remove(where)  # type: ignore[attr-defined]
            del self.digests[where]
            return
        last = len(self.rows) - 1  # the last row fills the hole
        if where != last:
            moved = self.rows[last]
            self.matrix[where] = self.matrix[last]
            self.rows[where] = moved
            self.ids[moved] = where
        self.rows.pop()

    def search(self, vector: Vector, floor: float) -> list[Candidate]:
        if self.hnsw is not None:
            found = self.hnsw.search(vector, _SEARCHED)  # type: ignore[attr-defined]
            return [
                Candidate(self.digests[int(k)], 1.0 - float(d))
                for k, d in zip(found.keys, found.distances, strict=True)
                if int(k) in self.digests and 1.0 - float(d) >= floor
            ]
        if not self.rows:
            return []
        scores = self.matrix[: len(self.rows)] @ vector
        above = np.flatnonzero(scores >= floor)
        if len(above) > _SEARCHED:
            above = above[np.argpartition(scores[above], -_SEARCHED)[-_SEARCHED:]]
        best = sorted(above, key=lambda i: -scores[i])
        return [Candidate(self.rows[i], float(scores[i])) for i in best]

    def _to_graph(self, labels: itertools.count[int]) -> None:
        from usearch.index import Index  # only once a bucket is large

        graph = Index(ndim=self.dims, metric="cos", dtype="f16", connectivity=16,
                      expansion_add=64, expansion_search=64)  # fmt: skip
        keys = np.array([next(labels) for _ in self.rows], dtype=np.uint64)
        graph.add(keys, self.matrix[: len(self.rows)])
        self.digests = {int(k): d for k, d in zip(keys, self.rows, strict=True)}
        self.ids = {d: int(k) for k, d in self.digests.items()}
        self.hnsw, self.rows, self.matrix = graph, [], np.zeros((0, self.dims), np.float32)


@dataclass
class _Space:
    buckets: dict[str, _Bucket] = field(default_factory=dict)
    order: OrderedDict[str, str] = field(default_factory=OrderedDict)  # digest -> bucket


class VectorIndex:
    def __init__(self) -> None:
        self._spaces: dict[str, _Space] = {}
        self._labels = itertools.count(1)

    def __len__(self) -> int:
        return sum(len(s.order) for s in self._spaces.values())

    def add(self, namespace: str, bucket: str, digest: str, vector: Vector, limit: int) -> None:
        space = self._spaces.setdefault(namespace, _Space())
        held = space.buckets.get(bucket)
        if held is not None and held.dims != vector.shape[0]:
            return  # the embedding model changed size: the old vectors cannot be compared
        if held is None:
            held = space.buckets[bucket] = _Bucket(vector.shape[0])
        held.add(digest, vector, self._labels)
        space.order.pop(digest, None)
        space.order[digest] = bucket
        while len(space.order) > limit:
            old, where = space.order.popitem(last=False)
            self._drop(space, where, old)

    def remove(self, namespace: str, digest: str) -> None:
        space = self._spaces.get(namespace)
        where = space.order.pop(digest, None) if space is not None else None
        if space is not None and where is not None:
            self._drop(space, where, digest)

    def search(self, namespace: str, bucket: str, vector: Vector, floor: float) -> list[Candidate]:
        space = self._spaces.get(namespace)
        held = space.buckets.get(bucket) if space is not None else None
        if held is None or held.dims != vector.shape[0]:
            return []
        return held.search(vector, floor)

    @staticmethod
    def _drop(space: _Space, bucket: str, digest: str) -> None:
        held = space.buckets.get(bucket)
        if held is None:
            return
        held.remove(digest)
        if not len(held):
            del space.buckets[bucket]
