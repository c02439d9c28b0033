"""The response cache's own work per call, in process, with namespaces already holding
--entries entries: an exact miss (lookup and store), a semantic miss (lookup, vector search,
store and index; the embedding call itself excluded: a stub answers it at once), and the
memory 100k entries take.

    python bench/cache_work.py [--entries 100000] [--dims 384] [--calls 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.cache.stage import CacheStage, ResponseCache
from gateway.cache.stores import MemoryEntries
from gateway.call import Call, Outcome, Principal, Usage
from gateway.config.cache_schema import AliasCache, SemanticConfig
from gateway.routing.router import Router

ANSWER = {
    "id": "chatcmpl-x", "object": "chat.completion", "created": 1, "model": "m",
    "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                 "message": {"role": "assistant", "content": "word " * 150}}],
}  # fmt: skip
WHO = Principal("k", "k", team="bench")


class Stub:
    """The embedding side call, answered at once with a random unit vector."""

    def __init__(self, dims: int) -> None:
        self.rng = np.random.default_rng(1)
        self.dims = dims
        self.spent = 0.0  # seconds in the stub and in reading its answer: not the cache's

    async def run(self, call: Call) -> tuple[int, bytes]:
        start = time.perf_counter()
        vector = self.rng.standard_normal(self.dims).astype(np.float32)
        body = orjson.dumps({"data": [{"index": 0, "embedding": vector.tolist()}]})
        orjson.loads(body)  # what the stage does with it, timed here twice over: subtracted
        self.spent += (time.perf_counter() - start) * 1.0
        return 200, body


def graph_bytes(cache: ResponseCache) -> int:
    """What the HNSW graphs hold natively (tracemalloc sees Python and numpy memory only)."""
    spaces = cache.index._spaces.values()  # a benchmark's look inside
    graphs = [b.hnsw for s in spaces for b in s.buckets.values() if b.hnsw is not None]
    return sum(int(g.memory_usage) for g in graphs)  # type: ignore[attr-defined]


def router() -> Router:
    from gateway.config.loader import load_config
    from gateway.runtime import build_router

    path = Path("/tmp/tollgate-bench-cache.yaml")
    path.write_text("version: 1\nauth: {mode: open}\nbackends: {s: {type: sim, models: "
                    "[{name: m}]}}\nmodels: {chat: {backend: s, model: m}}\n")  # fmt: skip
    from gateway.routing.state import ReplicaStates

    return build_router(load_config(path, env={}).config, ReplicaStates())


def call(i: int, question: str | None = None) -> Call:
    text = question or f"question {i} about something in particular"
    body = {"model": "chat", "messages": [{"role": "system", "content": "be brief"},
            {"role": "user", "content": text}], "temperature": 0, "max_tokens": 64}  # fmt: skip
    return Call(f"r{i}", "openai", "chat.completions", "chat", body, False, False, principal=WHO)


async def once(stage: CacheStage, r: Router, c: Call, stub: Stub) -> tuple[float, float]:
    """The lookup (on the request path, the embedding excluded) and the store (after the
    answer), in microseconds."""
    outcome = Outcome()
    stub.spent = 0.0
    start = time.perf_counter()
    await stage.lookup(c, outcome, r)
    looked = time.perf_counter() - start - stub.spent
    outcome.status, outcome.usage = 200, Usage(20, 150)
    outcome.response_body = orjson.dumps(ANSWER)
    start = time.perf_counter()
    await stage.store(c, outcome)
    return looked * 1e6, (time.perf_counter() - start) * 1e6


async def measure(mode: str, args: Any) -> dict[str, float]:
    r = router()
    shared = ResponseCache(MemoryEntries(max_bytes=4 * 2**30))
    semantic = SemanticConfig(embedding_model="embed", threshold=0.95)
    semantic = semantic if mode == "semantic" else None
    settings = AliasCache(mode=mode, max_entries=args.entries + args.calls, semantic=semantic)  # type: ignore[arg-type]
    stub = Stub(args.dims)
    stage = CacheStage(shared, {"chat": settings}, stub)
    await once(stage, r, call(-1), stub)  # everything imported before memory is counted
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for i in range(args.entries):  # fill: every entry in one bucket (the worst case)
        await once(stage, r, call(i), stub)
    gc.collect()
    held = tracemalloc.get_traced_memory()[0] - before + graph_bytes(shared)
    tracemalloc.stop()
    timed = [await once(stage, r, call(10**9 + i), stub) for i in range(args.calls)]
    lookups = sorted(t[0] for t in timed)
    stores = sorted(t[1] for t in timed)
    store = shared.store
    assert isinstance(store, MemoryEntries)
    return {
        "lookup_p50_us": statistics.median(lookups),
        "lookup_p99_us": lookups[int(len(lookups) * 0.99)],
        "store_p50_us": statistics.median(stores),
        "entries": len(store),
        "entry_bytes": store.size_bytes,
        "mb_per_100k": held / 2**20 * 100_000 / args.entries,
        "vectors": len(shared.index),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--dims", type=int, default=384)
    parser.add_argument("--calls", type=int, default=2000)
    args = parser.parse_args()
    for mode in ("exact", "semantic"):
        result = asyncio.run(measure(mode, args))
        print(f"{mode:9} miss: lookup p50 {result['lookup_p50_us']:.1f} us "
              f"(p99 {result['lookup_p99_us']:.1f}), store p50 {result['store_p50_us']:.1f} us; "
              f"{result['entries']} entries, "
              f"{result['entry_bytes'] / 2**20:.1f} MiB of entries, "
              f"{result['mb_per_100k']:.0f} MiB per 100k in all "
              f"(vectors: {result['vectors']})")  # fmt: skip


if __name__ == "__main__":
    main()
