"""Prefix-aware routing on the Mooncake trace: the requests of
`../shared/traces/mooncake/synthetic_trace.jsonl` (arrival times, prompt lengths, 512-token
block ids: a shared id is a shared block of text) replayed through the gateway's pipeline onto
eight simulated replicas, each with ~450k tokens of KV cache (an 8B model on one 80 GB GPU),
once per strategy, in one run:

    prefix_aware, round_robin, least_outstanding, and prefix_aware behind two gateways
    (alternating calls, the same replicas): `fleet`, each with its own index (rendezvous
    hashing alone keeps them in step), and `shared`, indexes shared through Redis
    (routing/prefix_feed.py, --redis, synced every --sync-ms)

Reported per strategy: the prefix hit rate the replicas report (cached / prompt tokens) and
its share of the trace's ceiling (one replica with an infinite cache, at the trace's block
granularity), calls served by the busiest replica over the mean, TTFT p50/p99 in model
seconds, and the index's memory per replica.

    python bench/prefix.py [--limit 4000] [--time-scale 0.25] [--kv-tokens 450000]
                           [--window 2] [--strategies a,b] [--out FILE]

Time is compressed by --time-scale (model seconds x scale = real seconds, arrivals alike), so
the replicas' loads keep the trace's proportions; the gateway and the simulated replicas share
one process, so a scale the machine cannot keep up with inflates TTFT for all strategies alike.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import tempfile
import time
from collections import Counter, OrderedDict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
import redis

from gateway.accounting.tokens import TokenCounter
from gateway.call import Call, CallRecord, Principal
from gateway.config.loader import load_config
from gateway.pipeline import Pipeline
from gateway.recorder import Recorder
from gateway.routing.prefix_feed import PrefixFeed
from gateway.routing.state import ReplicaStates
from gateway.routing.watch import Watcher
from gateway.runtime import Runtime, RuntimeDeps, build_runtime
from tests.support.runtime import make_deps

TRACE = (
    Path(__file__).resolve().parent.parent.parent / "shared/traces/mooncake/synthetic_trace.jsonl"
)
BLOCK = 512  # tokens per trace block id
REPLICAS = 8
KV_TOKENS = 450_000
SIM_BLOCK = 16


def vocabulary(tokens: TokenCounter) -> list[str]:
    """Words that are one token each with their leading space, so a block of 512 of them is
    512 tokens and blocks tokenize independently of their neighbours."""
    enc = tokens._encoding
    assert enc is not None, "the tokenizer is needed (it ships with the package)"
    words = []
    for i in range(20_000, 60_000):
        piece = enc.decode([i])
        word = piece[1:]
        if piece.startswith(" ") and word.isalpha() and word.islower() and len(word) > 2:
            words.append(piece)
    return words


class Blocks:
    def __init__(self, words: list[str]) -> None:
        self.words = words
        self._cache: dict[int, list[str]] = {}

    def block(self, block_id: int) -> list[str]:
        found = self._cache.get(block_id)
        if found is None:
            rng = random.Random(block_id)
            found = self._cache[block_id] = rng.choices(self.words, k=BLOCK)
        return found

    def prompt(self, row: dict[str, Any]) -> str:
        out: list[str] = []
        for block_id in row["hash_ids"]:
            out += self.block(block_id)
        return "".join(out[: row["input_length"]])


def ceiling(rows: list[dict[str, Any]], capacity_tokens: float = float("inf")) -> float:
    """One replica with an LRU cache of `capacity_tokens` (infinite: the trace's ceiling; the
    fleet's total KV: what no routing can beat, the fleet's cache being no bigger): leading
    blocks seen before and still held are cached (the engine's always-recomputed last token
    included)."""
    held: OrderedDict[tuple[int, ...], None] = OrderedDict()
    cached = total = 0
    for row in rows:
        keys = [tuple(row["hash_ids"][: i + 1]) for i in range(len(row["hash_ids"]))]
        hit = 0
        while hit < len(keys) and keys[hit] in held:
            hit += 1
        usable = (row["input_length"] - 1) // SIM_BLOCK * SIM_BLOCK
        cached += min(hit * BLOCK, usable)
        total += row["input_length"]
        for key in reversed(keys):
            if key in held:
                held.move_to_end(key)
            else:
                held[key] = None
        while len(held) * BLOCK > capacity_tokens:
            held.popitem(last=False)
    return cached / total


def config(strategy: str, scale: float, kv_tokens: int = KV_TOKENS, window: float = 8.0) -> str:
    sims = "\n".join(
        f"  r{i}: {{type: sim, time_scale: {scale}, models: [{{name: m, slots: 64, "
        f"kv_blocks: {kv_tokens // SIM_BLOCK}, block_tokens: {SIM_BLOCK}, "
        f"prefill_ms_per_token: 0.1, decode_ms_per_token: 12, max_model_len: 262144}}]}}"
        for i in range(REPLICAS)
    )
    pool = ", ".join(f"{{backend: r{i}, model: m}}" for i in range(REPLICAS))
    return f"""
version: 1
auth: {{keys: [{{name: t, key_sha256: "{"0" * 64}"}}]}}
backends:
{sims}
models:
  chat: {{tiers: {{fp16: [{pool}]}}, strategy: {strategy}, kv_isolation: shared}}
routing: {{prefix_aware: {{load_window: {window}}}}}
"""


class Sink:
    def __init__(self) -> None:
        self.records: list[CallRecord] = []

    def submit(self, record: CallRecord) -> None:
        self.records.append(record)


def runtime(strategy: str, args: argparse.Namespace, tmp: Path, deps: RuntimeDeps) -> Runtime:
    path = tmp / f"{strategy}-{id(deps)}.yaml"
    path.write_text(config(strategy, args.time_scale, args.kv_tokens, args.window))
    return build_runtime(load_config(path, env={}), deps)


async def replay(
    runtimes: list[Runtime], rows: list[dict[str, Any]], blocks: Blocks, scale: float
) -> dict[str, Any]:
    sink = Sink()
    pipeline = Pipeline(Recorder(sink, TokenCounter()))  # type: ignore[arg-type]
    ttft: list[float] = []
    loop = asyncio.get_running_loop()
    start = loop.time()

    async def one(i: int, row: dict[str, Any]) -> None:
        body = {"model": "chat", "max_tokens": max(1, row["output_length"]), "stream": True,
                "messages": [{"role": "user", "content": blocks.prompt(row)}]}  # fmt: skip
        call = Call(f"r{i}", "openai", "chat.completions", "chat", body, True, False,
                    principal=Principal("t", "t", team="t"))  # fmt: skip
        sent = loop.time()
        reply = await pipeline.handle(call, runtimes[i % len(runtimes)])
        assert reply.stream is not None
        first = True
        async for _ in reply.stream:
            if first:
                ttft.append((loop.time() - sent) / scale)
                first = False
        await reply.stream.close()

    tasks = []
    for i, row in enumerate(rows):
        delay = start + row["timestamp"] / 1000 * scale - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i, row)))
    await asyncio.gather(*tasks)
    usage = [r.usage for r in sink.records if r.usage is not None]
    served = Counter(r.backend for r in sink.records)
    ttft.sort()
    states = [s for rt in runtimes for s in rt.router.replica_states()]
    memory = [s.prefix_index.memory_bytes() for s in states if s.prefix_index is not None]
    return {
        "hit_rate": sum(u.cached_tokens for u in usage) / sum(u.input_tokens for u in usage),
        "busiest_over_mean": max(served.values()) / (len(sink.records) / REPLICAS),
        "ttft_p50_s": statistics.median(ttft),
        "ttft_p99_s": ttft[int(len(ttft) * 0.99) - 1],
        "index_kb_per_replica": (sum(memory) / len(memory) / 1024) if memory else 0.0,
        "failed": len(rows) - len(usage),
    }


def states(
    shared: bool, feeds: list[PrefixFeed], prefix: str, args: argparse.Namespace
) -> ReplicaStates:
    """A gateway's replica states; with `shared`, hooked up to the fleet's index feed."""
    made = ReplicaStates()
    if shared:
        feeds.append(PrefixFeed(args.redis, prefix, made, args.sync_ms / 1000))
    return made


async def run(args: argparse.Namespace) -> dict[str, Any]:
    rows = [json.loads(line) for line in TRACE.read_text().splitlines()][: args.limit]
    tokens = TokenCounter()
    blocks = Blocks(vocabulary(tokens))
    results: dict[str, Any] = {
        "requests": len(rows),
        "kv_tokens": args.kv_tokens,
        "ceiling": ceiling(rows),
        "achievable": ceiling(rows, REPLICAS * args.kv_tokens),
    }
    transport = httpx.AsyncHTTPTransport()
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.strategies.split(","):
            strategy = "prefix_aware" if name in ("fleet", "shared") else name
            feeds: list[PrefixFeed] = []
            prefix = f"tollgate-bench-{random.randrange(10**9)}:"
            shared = name == "shared"
            first_deps = make_deps(transport, tokens, replicas=states(shared, feeds, prefix, args))
            first = runtime(strategy, args, Path(tmp), first_deps)
            runtimes = [first]
            if name in ("fleet", "shared"):  # a second gateway: its own state, same replicas
                deps = make_deps(transport, tokens, replicas=states(shared, feeds, prefix, args))
                second = runtime(strategy, args, Path(tmp), deps)
                for key in list(second.backends):
                    await second.backends[key].aclose()
                second.backends.clear()  # type: ignore[attr-defined]
                second.backends.update(first.backends)  # type: ignore[attr-defined]
                runtimes.append(second)
            watchers = []
            if args.poll:  # each gateway polls the engines' load, as a fleet should
                for rt in runtimes:
                    watcher = Watcher(lambda rt=rt: rt.watched, tick=args.poll)
                    watcher.start()
                    watchers.append(watcher)
            for feed in feeds:
                feed.start()
            began = time.process_time()
            results[name] = await replay(runtimes, rows, blocks, args.time_scale)
            results[name]["cpu_s"] = time.process_time() - began
            print(name, results[name], file=sys.stderr)
            for feed in feeds:
                await feed.aclose()
            if feeds:
                redis.Redis.from_url(args.redis).delete(f"{prefix}prefix-routes")
            for watcher in watchers:
                await watcher.aclose()
            for backend in first.backends.values():
                await backend.aclose()
    await transport.aclose()
    return results


def table(r: dict[str, Any]) -> str:
    top, best = r["ceiling"], r["achievable"]
    lines = [
        f"Mooncake trace, first {r['requests']} requests, {REPLICAS} replicas x "
        f"{r['kv_tokens']:,} KV tokens; ceiling (one replica, infinite cache): {top:.1%}; "
        f"achievable (one cache as big as the fleet's, {REPLICAS * r['kv_tokens']:,}): {best:.1%}",
        "",
        "| strategy | prefix hit rate | share of ceiling | share of achievable | busiest / mean "
        "| TTFT p50 (s) | TTFT p99 (s) | index per replica (KB) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    labels = {"fleet": "prefix_aware, two gateways, own indexes",
              "shared": "prefix_aware, two gateways, indexes shared (Redis)"}  # fmt: skip
    for name in ("prefix_aware", "shared", "fleet", "least_outstanding", "round_robin"):
        if name not in r:
            continue
        x = r[name]
        label = labels.get(name, name)
        lines.append(
            f"| {label} | {x['hit_rate']:.1%} | {x['hit_rate'] / top:.1%} | "
            f"{x['hit_rate'] / best:.1%} | "
            f"{x['busiest_over_mean']:.2f} | {x['ttft_p50_s']:.2f} | {x['ttft_p99_s']:.2f} | "
            f"{x['index_kb_per_replica']:.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=4000)
    parser.add_argument("--time-scale", type=float, default=0.25)
    parser.add_argument("--kv-tokens", type=int, default=KV_TOKENS, help="per replica")
    parser.add_argument("--window", type=float, default=8.0, help="prefix_aware load_window")
    parser.add_argument(
        "--poll", type=float, default=0, help="poll the engines' load every N s (0: never)"
    )
    parser.add_argument(
        "--strategies", default="prefix_aware,shared,fleet,least_outstanding,round_robin"
    )
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--sync-ms", type=float, default=50.0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    results = asyncio.run(run(args))
    text = table(results)
    print(text)
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n\n" + text + "\n")


if __name__ == "__main__":
    main()
