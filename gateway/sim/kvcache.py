"""A fixed-capacity KV cache of token blocks keyed by chained block hashes, as vLLM's automatic
prefix caching does: a block is reusable only if every block before it matched too."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence


def block_hashes(token_ids: Sequence[int], block_tokens: int, salt: str | None) -> list[int]:
    """One hash per *full* block; each hash covers the whole prefix up to that block."""
    hashes: list[int] = []
    previous = hash(("tollgate-kv", salt))
    for start in range(0, len(token_ids) - block_tokens + 1, block_tokens):
        previous = hash((previous, tuple(token_ids[start : start + block_tokens])))
        hashes.append(previous)
    return hashes


class PrefixCache:
    """LRU over blocks. `match` counts the leading blocks already cached and refreshes them."""

    def __init__(self, capacity_blocks: int) -> None:
        self.capacity = capacity_blocks
        self._blocks: OrderedDict[int, None] = OrderedDict()
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._blocks)

    @property
    def usage(self) -> float:
        return len(self._blocks) / self.capacity

    def match(self, hashes: Sequence[int]) -> int:
        hit = 0
        for h in hashes:
            if h not in self._blocks:
                break
            self._blocks.move_to_end(h)
            hit += 1
        return hit

    def insert(self, hashes: Sequence[int]) -> None:
        for h in hashes:
            if h in self._blocks:
                self._blocks.move_to_end(h)
            else:
                self._blocks[h] = None
        while len(self._blocks) > self.capacity:
            self._blocks.popitem(last=False)
            self.evictions += 1
