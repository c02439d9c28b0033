"""How a quality guard reads and compares answers: both dialects, whole and streamed."""

from __future__ import annotations

import orjson
import pytest

from gateway.policies.rules.compare import Answer, Context, answer_of, cosine, resolve


def sse(*events: dict[str, object]) -> bytes:
    return b"".join(b"data: " + orjson.dumps(e) + b"\n\n" for e in events) + b"data: [DONE]\n\n"


def test_answers_are_read_from_either_dialect_whole_or_streamed() -> None:
    whole = orjson.dumps({"choices": [{"message": {"content": "Hi there", "tool_calls": [
        {"function": {"name": "f", "arguments": '{"a": 1}'}}]}}]})  # fmt: skip
    assert answer_of(whole, "openai", False) == Answer("Hi there", (("f", {"a": 1}),))
    streamed = sse(
        {"choices": [{"index": 0, "delta": {"content": "Hi "}}]},
        {"choices": [{"index": 0, "delta": {"content": "there"}}]},
        {"choices": [{"index": 0, "delta": {"tool_calls": [
            {"index": 0, "function": {"name": "f", "arguments": '{"a"'}}]}}]},
        {"choices": [{"index": 0, "delta": {"tool_calls": [
            {"index": 0, "function": {"arguments": ": 1}"}}]}}]},
    )  # fmt: skip
    assert answer_of(streamed, "openai", True) == Answer("Hi there", (("f", {"a": 1}),))
    blocks = [{"type": "text", "text": "Hi"}, {"type": "tool_use", "name": "f", "input": {"a": 1}}]
    message = orjson.dumps({"content": blocks})
    assert answer_of(message, "anthropic", False) == Answer("Hi", (("f", {"a": 1}),))
    events = sse(
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text"}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}},
        {"type": "content_block_start", "index": 1,
         "content_block": {"type": "tool_use", "name": "f"}},
        {"type": "content_block_delta", "index": 1,
         "delta": {"type": "input_json_delta", "partial_json": '{"a": 1}'}},
    )  # fmt: skip
    assert answer_of(events, "anthropic", True) == Answer("Hi", (("f", {"a": 1}),))
    assert answer_of(b"not json", "openai", False) is None
    assert answer_of(orjson.dumps({"error": {}}), "openai", False) is None


@pytest.mark.parametrize(
    ("compare", "served", "reference", "agree"),
    [
        ("exact", Answer("", (("f", {"a": 1}),)), Answer("", (("f", {"a": 1}),)), True),
        ("exact", Answer("", (("f", {"a": 1}),)), Answer("", (("f", {"a": 2}),)), False),
        ("exact", Answer('{"x": 1, "y": 2}'), Answer('{"y": 2, "x": 1}'), True),
        ("text", Answer("Paris."), Answer("  paris"), True),
        ("text", Answer("Paris"), Answer("Lyon"), False),
        ("auto", Answer('{"x": 1}'), Answer('{"x": 2}'), False),
        ("auto", Answer("The capital is Paris!"), Answer("the capital is paris"), True),
    ],
)
async def test_built_in_comparators(compare: str, served: Answer, reference: Answer,
                                    agree: bool) -> None:  # fmt: skip
    assert await resolve(compare).agree(served, reference, Context(0.9)) is agree


async def test_prose_is_compared_by_embeddings_when_a_model_is_configured() -> None:
    vectors = {"a long answer " * 20: [1.0, 0.0], "another long one " * 20: [0.96, 0.28],
               "something else entirely " * 20: [0.0, 1.0]}  # fmt: skip

    async def embed(texts: object) -> list[list[float]]:
        return [vectors[t] for t in texts]  # type: ignore[attr-defined]

    auto = resolve("auto")
    a, b, c = (Answer(t) for t in vectors)
    assert await auto.agree(a, b, Context(0.9, embed))  # cosine 0.96
    assert not await auto.agree(a, c, Context(0.9, embed))
    assert cosine([1, 0], [1, 0]) == 1.0
    with pytest.raises(LookupError, match="unknown comparator 'vibes'"):
        resolve("vibes")
