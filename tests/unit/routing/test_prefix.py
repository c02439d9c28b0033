"""Prefix-aware routing's pieces: block keys, the per-replica index, the closed loop's
corrections, and the KV capacity an engine reports."""

from __future__ import annotations

import random

from gateway.call import Usage
from gateway.routing.prefix import (
    PrefixIndex,
    PrefixPrediction,
    PrefixStats,
    PrefixTried,
    block_hashes,
)
from gateway.routing.watch import parse_load
from gateway.sim.config import SimModel
from gateway.sim.engine import Replica
from gateway.sim.metrics import render


def test_keys_do_not_depend_on_how_the_prompt_is_split() -> None:
    rng = random.Random(3)
    data = bytes(rng.randrange(256) for _ in range(60_000))
    whole = block_hashes([data], 2048, "s", 30_000)
    for _ in range(20):
        cuts = sorted(rng.sample(range(1, len(data)), 7))
        parts = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
        assert block_hashes(parts, 2048, "s", 30_000) == whole


def test_blocks_double_every_eight_and_keys_chain_over_the_prefix() -> None:
    k = block_hashes([b"a" * 40_000], 2048, "")
    hashes, ends = k.hashes, k.ends
    assert ends[:9] == [2048 * i for i in range(1, 9)] + [16384 + 4096]
    assert ends[-1] <= 40_000 and len(hashes) == len(ends)
    other = block_hashes([b"a" * 4096 + b"b" * 36_000], 2048, "").hashes
    assert other[:2] == hashes[:2] and other[2] != hashes[2]  # same prefix, same keys
    salted = block_hashes([b"a" * 40_000], 2048, "tenant").hashes
    assert not set(salted) & set(hashes)  # another tenant shares nothing


def test_the_index_matches_leading_blocks_and_evicts_the_longest_first() -> None:
    k = block_hashes([b"x" * 20_000], 2048, "")  # 8 x 2 KiB + 1 x 4 KiB
    hashes, ends = k.hashes, k.ends
    index = PrefixIndex(capacity_bytes=20_480)
    index.insert(hashes, ends)
    assert index.match(hashes) == len(hashes) and index.held == ends[-1]
    k = block_hashes([b"y" * 6144], 2048, "")
    more, more_ends = k.hashes, k.ends
    index.insert(more, more_ends)  # over capacity: the first prompt's deepest blocks go
    assert index.held <= 20_480
    assert 0 < index.match(hashes) < len(hashes) and index.match(more) == 3


def _prediction(matched: int) -> tuple[PrefixPrediction, PrefixTried]:
    k = block_hashes([b"z" * 16_384], 2048, "")
    hashes, ends = k.hashes, k.ends
    index = PrefixIndex(1_000_000)
    index.insert(hashes, ends)
    tried = PrefixTried(index, PrefixStats(), matched, "r")
    p = PrefixPrediction(hashes, ends, 2048, 16_384, 0, 0, tried={("r", "m"): tried})
    return p, tried


def test_two_calls_finding_nothing_cached_clear_the_index() -> None:
    p, tried = _prediction(8)
    nothing = Usage(input_tokens=4096, cached_tokens=0)
    assert p.observe(("r", "m"), nothing) and p.predicted_tokens == 4096
    assert tried.index.resets == 0 and tried.stats.miss_streak == 1
    p.observe(("r", "m"), nothing)
    assert tried.index.resets == 1 and tried.stats.misses == 2
    assert len(tried.index) == 8  # what the last call put there is held again


def test_a_partial_miss_shrinks_the_index_and_a_hit_does_not() -> None:
    p, tried = _prediction(8)
    p.observe(("r", "m"), Usage(input_tokens=4096, cached_tokens=4000))
    assert tried.index.capacity == tried.index.configured and tried.stats.misses == 0
    p.observe(("r", "m"), Usage(input_tokens=4096, cached_tokens=1000))
    assert tried.index.capacity < tried.index.configured and tried.stats.misses == 1
    assert not p.observe(("other", "m"), Usage(input_tokens=4096, cached_tokens=0))


def test_the_kv_capacity_an_engine_reports_is_read_from_its_metrics() -> None:
    model = SimModel(name="m", kv_blocks=1000, block_tokens=16)
    text = render([Replica(model, 0, 0.0), Replica(model, 1, 0.0)]).decode()
    load = parse_load(text, "m")
    assert load is not None and load.kv_capacity_tokens == 32_000
    assert parse_load(text, "other") is None


def test_a_prompt_is_known_by_its_start_and_by_its_conversation() -> None:
    system, question = b"system prompt " * 40, b"the first question"
    first = block_hashes([system, question], 2048, "s", len(system) + len(question))
    later = block_hashes([system, question, b"an answer " * 300, b"a second question"],
                         2048, "s", len(system) + len(question))  # fmt: skip
    other = block_hashes([system, b"another question"], 2048, "s", len(system) + 16)
    assert first.anchor == later.anchor != other.anchor  # one conversation
    assert first.root == later.root == other.root  # one system prompt
    elsewhere = block_hashes([b"another system prompt " * 40], 2048, "s")
    assert elsewhere.root != first.root


def test_a_responses_conversation_lays_out_like_its_chat_and_grows_on_its_prefix() -> None:
    """A Responses call's turns (its whole conversation as input items) key the same blocks as
    the chat messages it is translated to, and a later turn extends the earlier one's."""
    from gateway.call import Call
    from gateway.routing.prefix import prompt_parts

    history = "long shared context " * 400

    def responses(items: list[object]) -> Call:
        return Call("r", "openai", "responses", "chat",
                    {"instructions": "Be brief.", "input": items}, False, False)  # fmt: skip

    first = responses([{"role": "user", "content": history}])
    second = responses([
        {"role": "user", "content": history},
        {"type": "message", "role": "assistant",
         "content": [{"type": "output_text", "text": "ok"}]},
        {"type": "function_call_output", "call_id": "c", "output": "42"},
    ])  # fmt: skip
    chat = Call("c", "openai", "chat.completions", "chat", {"system": "Be brief.", "messages": [
        {"role": "user", "content": history}]}, False, False)  # fmt: skip
    one, two, same = (prompt_parts(c) for c in (first, second, chat))
    assert one is not None and two is not None and same is not None
    a = block_hashes(one[0], 2048, "").hashes
    b = block_hashes(two[0], 2048, "").hashes
    assert a and b[: len(a)] == a and len(b) >= len(a)
    assert block_hashes(same[0], 2048, "").hashes == a
    assert prompt_parts(responses("just text")) is not None  # type: ignore[arg-type]
