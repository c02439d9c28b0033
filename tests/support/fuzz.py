"""Seeded request mutations for the gateway's five call endpoints: valid bodies with one to
three fields replaced by something hostile (wrong types, huge or impossible numbers, deep
nesting, control characters, oversized strings), plus malformed JSON. Same seed, same
requests, so a failure replays."""

from __future__ import annotations

import json
import random
from typing import Any

ENDPOINTS = {
    "/v1/chat/completions": {
        "model": "chat",
        "messages": [{"role": "user", "content": "fuzz"}],
        "max_tokens": 4,
    },
    "/v1/completions": {"model": "chat", "prompt": "fuzz", "max_tokens": 4},
    "/v1/embeddings": {"model": "embed", "input": "fuzz"},
    "/v1/messages": {
        "model": "chat",
        "max_tokens": 4,
        "messages": [{"role": "user", "content": "fuzz"}],
    },
    "/v1/messages/count_tokens": {
        "model": "chat",
        "messages": [{"role": "user", "content": "fuzz"}],
    },
}
FIELDS = (
    "model", "messages", "prompt", "input", "max_tokens", "max_completion_tokens", "n",
    "best_of", "stream", "stream_options", "stop", "stop_sequences", "tools", "tool_choice",
    "response_format", "temperature", "top_p", "system", "user", "seed", "logprobs",
)  # fmt: skip


def _deep(depth: int) -> Any:
    value: Any = "x"
    for i in range(depth):
        value = [value] if i % 2 else {"a": value}
    return value


def _value(rng: random.Random) -> Any:
    pool: list[Any] = [
        None, True, False, -1, 0, 1, 3, 129, 10**9, 2**62, -(2**62), 1e308, 0.5, -0.0, "",
        "x" * rng.choice((1, 300, 5000)), "\x00\x01\u2028", "💥" * 50, [], {}, [1, 2, 3],
        ["a", 5, None], {"type": "function"}, [{"role": "robot", "content": 5}],
        [{"role": "user", "content": [{"type": "image", "source": "x"}]}],
        [{"role": "assistant", "tool_calls": "x"}], [{"type": "text"}] * 3,
        _deep(rng.choice((10, 60, 70, 300))), {"include_usage": "yes"},
        {"type": "json_schema", "json_schema": 5},
        [{"role": "user", "content": "a"}] * rng.choice((1, 50)),
    ]  # fmt: skip
    return rng.choice(pool)


def request(rng: random.Random) -> tuple[str, bytes]:
    """A path and a raw body."""
    path = rng.choice(list(ENDPOINTS))
    roll = rng.random()
    if roll < 0.05:
        broken = [b"", b"{", b"[1,2]", b"null", b'"s"', b'{"model": "chat"', b"\xff\xfe"]
        return path, rng.choice(broken)
    body = dict(ENDPOINTS[path])
    for _ in range(rng.randint(1, 3)):
        body[rng.choice(FIELDS)] = _value(rng)
    raw = json.dumps(body).encode()  # orjson refuses to write past 254 levels
    if roll < 0.08:
        raw = raw.replace(b"4", b"123456789012345678901234567890", 1)  # beyond 64 bits
    return path, raw
