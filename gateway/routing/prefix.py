"""What a prompt shares with what each replica already holds: the rendered prompt cut into
fixed-size blocks, each block's key a hash chained over every block before it (a block is
reusable only if all before it are, as in vLLM's and SGLang's prefix caches), and a bounded
LRU of such keys per replica.

Blocks are of the prompt's UTF-8 text, not tokens: tokenizing a 32k-token prompt costs
milliseconds (tiktoken: ~10 ms here), hashing its ~128 KB ~15 us
(bench/prefix_work.py). The index is a prediction; the closed loop (PrefixPrediction.observe)
checks it against the cached tokens each replica reports and corrects it.

Hashes are xxh3-64 seeded with the previous block's hash (the first with the tenant's salt):
stable across processes, so two gateways key the same prompt alike (Python's own `hash` of a
str is salted per process).
"""

from __future__ import annotations

import bisect
import functools
import logging
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson
import xxhash

from gateway.call import Call, Usage

log = logging.getLogger("gateway.routing")

_hash = xxhash.xxh3_64_intdigest
CHARS_PER_TOKEN = 4.0  # until a replica's reports say otherwise (English prose, code: 3.5-4.5)


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        out = []
        for part in content:
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                out.append(part["text"])
            else:
                out.append(orjson.dumps(part).decode())
        return "\x1f".join(out)
    return "" if content is None else orjson.dumps(content).decode()


def prompt_parts(call: Call) -> tuple[list[bytes], int] | None:
    """The prompt in the order an engine's template lays it out (tools and system first, then
    each turn's role and content), as UTF-8 pieces hashed as one text without joining them (a
    long prompt is not copied again), and where its first user turn ends (what every turn of
    one conversation repeats: its anchor); None for calls that reuse no KV cache (embeddings,
    token counts)."""
    body = call.body
    if call.endpoint == "completions":
        prompt = body.get("prompt")
        if not isinstance(prompt, str):
            return None
        data = prompt.encode()
        return [data], len(data)
    if call.endpoint not in ("chat.completions", "messages", "responses"):
        return None
    parts: list[bytes] = []
    anchor = 0
    tools = body.get("tools")
    if tools:
        parts += (orjson.dumps(tools), b"\x1d")
    system = body.get("system") or body.get("instructions")
    if system:
        parts += (_text(system).encode(), b"\x1d")
    # A Responses call's input items (its whole conversation, earlier turns first) lay out
    # like messages: a function call's arguments or output are its content.
    messages = body.get("input") if call.endpoint == "responses" else body.get("messages")
    if isinstance(messages, str):
        messages = [{"role": "user", "content": messages}]
    if isinstance(messages, list):
        for m in messages:
            if isinstance(m, dict):
                role = m.get("role") or m.get("type")
                content = m.get("content", m.get("arguments", m.get("output")))
                parts += (str(role).encode(), b"\x1e", _text(content).encode())
                if m.get("tool_calls"):
                    parts.append(orjson.dumps(m["tool_calls"]))
                parts.append(b"\x1d")
                if not anchor and role == "user":
                    anchor = sum(len(p) for p in parts)
    return parts, anchor or sum(len(p) for p in parts)


DOUBLING = 8  # blocks of one size before the size doubles


@functools.lru_cache(maxsize=16)
def _ends(first: int) -> tuple[int, ...]:
    """Where blocks end, the same for every prompt: `first`-sized blocks, doubling in size
    every DOUBLING blocks (2 KiB blocks to 16 KiB, 4 KiB to 48 KiB, ...), up to 256 MiB. A
    32k-token prompt is ~25 blocks rather than ~60, at a granularity of ~1/8 of the depth,
    which is all routing needs."""
    out, end, step = [], 0, first
    while end + step <= 1 << 28:
        end += step
        out.append(end)
        if len(out) % DOUBLING == 0:
            step *= 2
    return tuple(out)


ROOT_BYTES = 512  # ~128 tokens: a prompt's start


@dataclass(frozen=True, slots=True)
class Keys:
    """A prompt's block keys (each standing for the whole prefix up to its block's end) and
    the blocks' ends in bytes; `root`, the hash of its first ROOT_BYTES (prompts that start alike:
    a system prompt, a document); `anchor`, the hash up to the end of its first user turn
    (every turn of one conversation, and no other conversation)."""

    hashes: list[int]
    ends: list[int]
    root: int
    anchor: int


def block_hashes(parts: Sequence[bytes], first: int, salt: str, anchor: int = 0) -> Keys:
    """The prompt's keys: the parts read as one text by one streaming hash (seeded with the
    tenant's salt), read at each cut, so each key stands for the whole prefix before it."""
    total = sum(len(p) for p in parts)
    ends = _ends(first)
    count = bisect.bisect_right(ends, total)
    start = max(1, min(ROOT_BYTES, total))
    anchor = max(1, min(anchor or total, total))
    cuts = sorted({*ends[:count], start, anchor})
    blocks = frozenset(ends[:count])
    hasher = xxhash.xxh3_64(seed=_hash(salt.encode()) if salt else 0)
    out: list[int] = []
    digests: dict[int, int] = {}
    k = position = 0
    for part in parts:
        size = len(part)
        if cuts[k] > position + size:  # no cut in this part
            hasher.update(part)
            position += size
            continue
        view, offset = memoryview(part), 0
        while k < len(cuts) and cuts[k] <= position + size:
            cut = cuts[k] - position
            hasher.update(view[offset:cut])
            digest = hasher.intdigest()
            if cuts[k] in blocks:
                out.append(digest)
            digests[cuts[k]] = digest
            offset, k = cut, k + 1
        if k == len(cuts):
            break
        hasher.update(view[offset:])
        position += size
    return Keys(out, list(ends[:count]), digests.get(start, 0), digests.get(anchor, 0))


def rendezvous(root: int, name: bytes) -> int:
    """Highest-random-weight score of a replica for a prefix: every gateway ranks the replicas
    of a cold prefix alike, so a fleet sends a new conversation to the same place."""
    return _hash(name, root)


class Share(Protocol):
    """Where an index's changes go for the rest of the fleet (prefix_feed.py)."""

    def inserted(self, hashes: Sequence[int], ends: Sequence[int]) -> None: ...

    def cleared(self) -> None: ...


class IndexSharing(Protocol):
    """A fleet's shared prefix index: hooks a replica's index up to it (prefix_feed.py)."""

    def attach(self, state: Any, index: PrefixIndex) -> None: ...


class PrefixIndex:
    """The block keys Tollgate believes one replica holds, least recently used first, bounded
    by the bytes of prompt text they stand for (the replica's KV capacity in tokens x its
    bytes per token)."""

    def __init__(self, capacity_bytes: int) -> None:
        self.capacity = max(1, capacity_bytes)
        self.configured = self.capacity
        self._blocks: OrderedDict[int, int] = OrderedDict()  # key -> its block's bytes
        self.held = 0
        self.resets = 0
        # Tells the other gateways of a fleet what this one routed (prefix_feed.py).
        self.share: Share | None = None

    def __len__(self) -> int:
        return len(self._blocks)

    def match(self, hashes: Sequence[int]) -> int:
        """Leading blocks held. Binary search: a chain's blocks are inserted and refreshed
        together and evicted oldest (shortest prefix) last, so presence is monotone."""
        blocks = self._blocks
        if not blocks or hashes[0] not in blocks:
            return 0
        lo, hi = 1, len(hashes)  # hashes[:lo] held; hashes[hi:] assumed not
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if hashes[mid - 1] in blocks:
                lo = mid
            else:
                hi = mid - 1
        return lo

    def insert(self, hashes: Sequence[int], ends: Sequence[int], *, shared: bool = True) -> None:
        """`shared`: this gateway routed it (the fleet is told); False for what another
        gateway told us."""
        if shared and self.share is not None:
            self.share.inserted(hashes, ends)
        blocks = self._blocks
        move = blocks.move_to_end
        for i in range(len(hashes) - 1, -1, -1):  # the shortest prefix ends most recent
            h = hashes[i]
            if h in blocks:
                move(h)
            else:
                size = ends[i] - (ends[i - 1] if i else 0)
                blocks[h] = size
                self.held += size
        self._evict()

    def shrink(self, factor: float) -> None:
        """The replica holds less than believed (it reported fewer cached tokens than
        predicted): assume a smaller cache, dropping the oldest entries."""
        self.capacity = max(self.configured // 8, 1, int(self.capacity * factor))
        self._evict()

    def grow(self) -> None:
        """A prediction came true: drift back towards the configured size."""
        if self.capacity < self.configured:
            self.capacity = min(self.configured, self.capacity + max(1, self.configured // 64))

    def clear(self, *, shared: bool = True) -> None:
        if shared and self.share is not None:
            self.share.cleared()
        self._blocks.clear()
        self.held = 0
        self.resets += 1

    def _evict(self) -> None:
        blocks = self._blocks
        while self.held > self.capacity and blocks:
            self.held -= blocks.popitem(last=False)[1]

    def memory_bytes(self) -> int:
        """An estimate: an OrderedDict entry (~100 bytes) and its int key and value (64)."""
        return len(self._blocks) * 164


@dataclass(slots=True)
class PrefixStats:
    """Per replica: the closed loop's view (metrics, /admin/replicas)."""

    predicted_tokens: int = 0
    reported_tokens: int = 0
    checked_calls: int = 0
    misses: int = 0  # calls that found much less cached than predicted
    miss_streak: int = 0
    # Bytes of prompt per token the replica reports (EWMA): sizes its index in tokens.
    bytes_per_token: float = CHARS_PER_TOKEN


@dataclass(slots=True)
class PrefixTried:
    index: PrefixIndex
    stats: PrefixStats
    matched: int  # blocks predicted cached when the call was sent there
    name: str


@dataclass(slots=True)
class PrefixPrediction:
    """One call's prompt keys, and what was predicted for each replica it was sent to."""

    hashes: list[int]  # none for a prompt shorter than a block: routed, never indexed
    ends: list[int]  # each block's end in the prompt's bytes
    block_bytes: int  # the first block's size (the settings they were cut with)
    prompt_bytes: int
    root: int  # the hash of the prompt's start (ROOT_BYTES), for rendezvous hashing
    anchor: int  # the hash up to its first user turn's end (its conversation)
    tried: dict[tuple[str, str], PrefixTried] = field(default_factory=dict)
    predicted_tokens: int = 0
    reported_tokens: int | None = None

    def observe(self, replica: tuple[str, str], usage: Usage) -> bool:
        """The replica's reported cached tokens against the prediction; a gap corrects the
        index. No cached tokens where several blocks were predicted, twice running, means
        its cache was emptied (a restart): its entries are dropped. False if there was
        nothing to check (no prediction for that replica, or no usage it reported)."""
        tried = self.tried.get(replica)
        if tried is None or usage.estimated or usage.input_tokens <= 0:
            return False
        per_token = max(self.prompt_bytes / usage.input_tokens, 0.5)
        predicted = int(self.ends[tried.matched - 1] / per_token) if tried.matched else 0
        reported = usage.cached_tokens
        self.predicted_tokens, self.reported_tokens = predicted, reported
        stats = tried.stats
        stats.bytes_per_token += 0.1 * (per_token - stats.bytes_per_token)
        stats.checked_calls += 1
        stats.predicted_tokens += predicted
        stats.reported_tokens += reported
        # A replica may report a little less than predicted (its own block size, the last
        # prompt token always recomputed): only under half is a miss, under a tenth a total one.
        if tried.matched == 0 or reported >= predicted / 2:
            stats.miss_streak = 0
            if tried.matched:
                tried.index.grow()
            return True
        stats.misses += 1
        if reported < predicted / 10:
            stats.miss_streak += 1
            if stats.miss_streak >= 2:
                log.warning(
                    "replica %s reported no cached prefix for %d calls its index predicted "
                    "hits for: its KV cache no longer holds what was routed there (a restart, "
                    "or evictions faster than its size suggests); its index is cleared",
                    tried.name, stats.miss_streak,
                )  # fmt: skip
                tried.index.clear()
                tried.index.insert(self.hashes, self.ends)  # what this call just put there
                stats.miss_streak = 0
            return True
        stats.miss_streak = 0
        tried.index.shrink(0.9)
        return True
