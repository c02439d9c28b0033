"""Whether two answers to the same request agree: what a quality guard asks of a cheaper tier.

Answers are read from either dialect's response, whole or streamed. Comparators are plugins
(built-ins, then the `tollgate.comparators` entry-point group):

    exact      tool calls equal (names and parsed arguments), else JSON values equal, else the
               text to the letter
    text       the text equal once normalised (case, whitespace, punctuation)
    embedding  cosine similarity of the two texts' embeddings (from the guard's
               `embedding_model`) at least the guard's `similarity`
    auto       exact for tool calls and JSON, text for short answers (32 words or fewer),
               embedding for prose when an embedding model is configured, else text
"""

from __future__ import annotations

import math
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import orjson

from gateway.backends.sse import json_events
from gateway.config import plugins

_SHORT_WORDS = 32
_PUNCTUATION = re.compile(r"[^\w\s]")
_SPACE = re.compile(r"\s+")

Embed = Callable[[Sequence[str]], Awaitable[list[list[float]] | None]]


@dataclass(frozen=True, slots=True)
class Answer:
    text: str
    tool_calls: tuple[tuple[str, Any], ...] = ()  # (name, parsed arguments)

    def json(self) -> Any | None:
        try:
            return orjson.loads(self.text) if self.text.strip()[:1] in ("{", "[") else None
        except orjson.JSONDecodeError:
            return None


@dataclass(frozen=True, slots=True)
class Context:
    """What a comparator may use: the threshold, and embeddings when a model is configured."""

    similarity: float
    embed: Embed | None = None


class Comparator(Protocol):
    name: ClassVar[str]

    async def agree(self, served: Answer, reference: Answer, context: Context) -> bool: ...


def normalised(text: str) -> str:
    return _SPACE.sub(" ", _PUNCTUATION.sub("", text.lower())).strip()


class Exact:
    name: ClassVar[str] = "exact"

    async def agree(self, served: Answer, reference: Answer, context: Context) -> bool:
        if served.tool_calls or reference.tool_calls:
            return served.tool_calls == reference.tool_calls
        a, b = served.json(), reference.json()
        if a is not None or b is not None:
            return a == b
        return served.text == reference.text


class Text:
    name: ClassVar[str] = "text"

    async def agree(self, served: Answer, reference: Answer, context: Context) -> bool:
        return normalised(served.text) == normalised(reference.text)


class Embedding:
    name: ClassVar[str] = "embedding"

    async def agree(self, served: Answer, reference: Answer, context: Context) -> bool:
        if context.embed is None:
            raise ValueError("the embedding comparator needs the guard's embedding_model")
        vectors = await context.embed([served.text, reference.text])
        if vectors is None:
            raise LookupError("embeddings unavailable")
        return cosine(vectors[0], vectors[1]) >= context.similarity


class Auto:
    name: ClassVar[str] = "auto"

    async def agree(self, served: Answer, reference: Answer, context: Context) -> bool:
        structured = served.tool_calls or reference.tool_calls
        if structured or served.json() is not None or reference.json() is not None:
            return await Exact().agree(served, reference, context)
        short = max(len(served.text.split()), len(reference.text.split())) <= _SHORT_WORDS
        if short or context.embed is None:
            return await Text().agree(served, reference, context)
        return await Embedding().agree(served, reference, context)


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=False))
    norm = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return dot / norm if norm else 0.0


def resolve(name: str) -> Comparator:
    """The comparator registered under `name` (config/plugins.py finds and checks it)."""
    instance: Comparator = plugins.comparator(name)
    return instance


def answer_of(body: bytes, dialect: str, stream: bool) -> Answer | None:
    """The answer in a response (a whole body, or the stream's events as relayed); None if it
    holds none (an error, an empty stream)."""
    try:
        if stream:
            return _streamed(body, dialect)
        payload = orjson.loads(body)
    except (orjson.JSONDecodeError, ValueError):
        return None
    return answer_in(payload, dialect)


def answer_in(payload: Any, dialect: str) -> Answer | None:
    """The answer in a whole response already parsed."""
    if not isinstance(payload, dict):
        return None
    return _anthropic(payload) if dialect == "anthropic" else _openai(payload)


def _openai(payload: dict[str, Any]) -> Answer | None:
    choices = payload.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return None
    message = choices[0].get("message") or {}
    text = message.get("content") or choices[0].get("text") or ""
    calls = tuple(
        (c["function"].get("name", ""), _parsed(c["function"].get("arguments", "")))
        for c in message.get("tool_calls") or ()
        if isinstance(c, dict) and isinstance(c.get("function"), dict)
    )
    return Answer(text if isinstance(text, str) else "", calls)


def _anthropic(payload: dict[str, Any]) -> Answer | None:
    content = payload.get("content")
    if not isinstance(content, list):
        return None
    blocks = [b for b in content if isinstance(b, dict)]
    text = "".join(b.get("text", "") for b in blocks if b.get("type") == "text")
    calls = tuple(
        (b.get("name", ""), b.get("input")) for b in blocks if b.get("type") == "tool_use"
    )
    return Answer(text, calls)


def _streamed(body: bytes, dialect: str) -> Answer | None:
    text: list[str] = []
    tools: dict[int, list[str]] = {}
    names: dict[int, str] = {}
    for event in json_events(body):
        if dialect == "anthropic":
            _anthropic_event(event, text, tools, names)
        else:
            _openai_chunk(event, text, tools, names)
    if not text and not tools:
        return None
    calls = tuple((names.get(i, ""), _parsed("".join(tools[i]))) for i in sorted(tools))
    return Answer("".join(text), calls)


def _openai_chunk(event: dict[str, Any], text: list[str], tools: dict[int, list[str]],
                  names: dict[int, str]) -> None:  # fmt: skip
    for choice in event.get("choices") or ():
        if not isinstance(choice, dict) or choice.get("index", 0) != 0:
            continue
        delta = choice.get("delta") or {}
        if isinstance(delta.get("content"), str):
            text.append(delta["content"])
        for call in delta.get("tool_calls") or ():
            index = call.get("index", 0)
            function = call.get("function") or {}
            if function.get("name"):
                names[index] = function["name"]
            tools.setdefault(index, []).append(function.get("arguments") or "")


def _anthropic_event(event: dict[str, Any], text: list[str], tools: dict[int, list[str]],
                     names: dict[int, str]) -> None:  # fmt: skip
    kind = event.get("type")
    index = event.get("index", 0)
    if kind == "content_block_start":
        block = event.get("content_block") or {}
        if block.get("type") == "tool_use":
            names[index] = block.get("name", "")
            tools.setdefault(index, [])
    elif kind == "content_block_delta":
        delta = event.get("delta") or {}
        if delta.get("type") == "text_delta":
            text.append(delta.get("text", ""))
        elif delta.get("type") == "input_json_delta":
            tools.setdefault(index, []).append(delta.get("partial_json", ""))


def _parsed(arguments: Any) -> Any:
    if not isinstance(arguments, str):
        return arguments
    try:
        return orjson.loads(arguments) if arguments else {}
    except orjson.JSONDecodeError:
        return arguments
