"""What `prefix_aware` costs per call in process, at eight replicas and 32k-token prompts:
the strategy's choice (render the prompt, hash its blocks, match every replica's index,
index it on the chosen one) and the closed loop's check, against `least_outstanding`. Also
what the alternative design would cost: tokenizing the prompt to key blocks by tokens.

    python bench/prefix_work.py [--calls 300] [--tokens 32000]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.accounting.tokens import TokenCounter
from gateway.call import Call, Principal, Usage
from gateway.routing.prefix import PrefixPrediction
from gateway.routing.prefix_aware import PrefixAware
from gateway.routing.state import CircuitSettings, ReplicaState
from gateway.routing.strategies import LeastOutstanding
from gateway.routing.table import Replica

WORDS = [
    "alpha",
    "bravo",
    "charlie",
    "delta",
    "echo",
    "foxtrot",
    "golf",
    "hotel",
    "india",
    "juliet",
    "kilo",
    "lima",
]


def prompts(count: int, tokens: int, rng: random.Random) -> list[str]:
    """Conversations of ~`tokens` tokens: 16 shared documents of 3/4 of the prompt, each
    followed by a question of its own (~4 characters a token)."""
    size = tokens * 4
    docs = [" ".join(rng.choice(WORDS) for _ in range(size * 3 // 4 // 6)) for _ in range(16)]
    out = []
    for _ in range(count):
        tail = " ".join(rng.choice(WORDS) for _ in range(size // 4 // 6))
        out.append(rng.choice(docs) + tail)
    return out


def calls(texts: list[str]) -> list[Call]:
    return [
        Call(
            "r",
            "openai",
            "chat.completions",
            "chat",
            {"model": "chat", "messages": [{"role": "user", "content": t}]},
            False,
            False,
            principal=Principal("k", "k", team="t"),
        )
        for t in texts
    ]


def run(strategy: LeastOutstanding | PrefixAware, batch: list[Call], replicas: int) -> float:
    pool = [Replica(f"b{i}", "m", "fp16") for i in range(replicas)]
    states = [ReplicaState(r.backend, "m", "", CircuitSettings()) for r in pool]
    rng = random.Random(1)
    usage = Usage(input_tokens=32_000, cached_tokens=24_000)
    began = time.process_time()
    for call in batch:
        first = next(iter(strategy.order(pool, states, rng, call)))
        if isinstance(call.prefix, PrefixPrediction):
            call.prefix.observe(pool[first].key, usage)
    return (time.process_time() - began) / len(batch) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--tokens", type=int, default=32_000)
    args = parser.parse_args()
    texts = prompts(args.calls, args.tokens, random.Random(7))
    run(PrefixAware(), calls(texts[:20]), 8)  # warm-up
    least = run(LeastOutstanding(), calls(texts), 8)
    aware = PrefixAware()
    prefix = run(aware, calls(texts), 8)
    counter = TokenCounter()
    began = time.process_time()
    for t in texts[:20]:
        counter.count(t)
    tokenize = (time.process_time() - began) / 20 * 1e6
    pool_states = [ReplicaState(f"b{i}", "m", "", CircuitSettings()) for i in range(8)]
    batch = calls(texts)
    replicas = [Replica(s.backend, "m", "fp16") for s in pool_states]
    for call in batch:
        next(iter(aware.order(replicas, pool_states, random.Random(1), call)))
    held = [s.prefix_index for s in pool_states if s.prefix_index is not None]
    blocks = sum(len(i) for i in held) / len(held)
    memory = sum(i.memory_bytes() for i in held) / len(held)
    print(f"prompts of ~{args.tokens:,} tokens ({len(texts[0]):,} characters), 8 replicas, "
          f"{args.calls} calls")  # fmt: skip
    print(f"least_outstanding: {least:8.1f} us per call")
    print(f"prefix_aware:      {prefix:8.1f} us per call ({prefix - least:+.1f} us)")
    print(f"tokenizing the prompt instead (cl100k): {tokenize:8.1f} us per call")
    held_bytes = max(1.0, sum(i.held for i in held) / len(held))
    full = memory / held_bytes * 450_000 * 4  # bytes of index per byte of prompt held, scaled
    print(f"index after {args.calls} calls: {blocks:,.0f} blocks, {memory / 1024:,.0f} KB per "
          f"replica; at the default capacity (450k tokens): {full / 1024:,.0f} KB")  # fmt: skip


if __name__ == "__main__":
    main()
