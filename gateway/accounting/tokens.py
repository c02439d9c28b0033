"""Token counting with tiktoken, and a deterministic estimate when an encoding is unavailable.

cl100k_base ships inside the package (`encodings/`, verified against tiktoken's published
SHA-256 when loaded), so a fresh install counts exactly with no network and no cache. Any other
encoding comes from tiktoken's own registry (its cache or a download); when that fails the
gateway keeps serving: it estimates, says once how to fix it, and marks its counts estimated.
"""

from __future__ import annotations

import base64
import functools
import gzip
import hashlib
import logging
import re
import zlib
from collections.abc import Iterable, Mapping
from importlib import resources
from typing import Any, Protocol

from gateway.errors import Fault

log = logging.getLogger("gateway.tokens")

_WORDISH = re.compile(r"\w+|[^\w\s]")
# OpenAI's documented chat overhead: ~3 tokens per message plus 3 to prime the reply.
_PER_MESSAGE = 3
_PER_REPLY = 3


class _Encoding(Protocol):
    def encode(self, text: str, *, disallowed_special: Any = ...) -> list[int]: ...


class TokenCounter:
    """Counts tokens with cl100k_base when available; otherwise estimates (`exact` is False)."""

    def __init__(self, encoding_name: str = "cl100k_base") -> None:
        self._encoding: _Encoding | None = None
        try:
            self._encoding = _lean_encoding(encoding_name)
        except Exception as exc:  # noqa: BLE001 - any failure (network, cache, plugin) means estimate
            log.warning(
                "tiktoken encoding %s unavailable (%s: %s); token counts will be estimated. "
                "To count exactly offline, put the encoding file in a directory and set "
                "TIKTOKEN_CACHE_DIR to it (tiktoken names the file by the SHA-1 of its URL), "
                "or use cl100k_base, which ships with Tollgate",
                encoding_name,
                type(exc).__name__,
                exc,
                extra={"encoding": encoding_name},
            )

    @property
    def exact(self) -> bool:
        return self._encoding is not None

    def encode(self, text: str) -> list[int]:
        """Token ids; the fallback gives stable pseudo-ids so prefix hashing still works."""
        if self._encoding is not None:
            return self._encoding.encode(text, disallowed_special=())
        return [zlib.crc32(piece.encode()) for piece in _WORDISH.findall(text)]

    def count(self, text: str) -> int:
        if not text:
            return 0
        return len(self.encode(text))

    def count_messages(self, messages: Iterable[Mapping[str, Any]]) -> int:
        """Prompt tokens of a chat request, counted the way OpenAI documents for its models."""
        total = _PER_REPLY
        for message in messages:
            total += _PER_MESSAGE
            total += self.count(str(message.get("role", "")))
            total += self.count(content_text(message.get("content")))
            if name := message.get("name"):
                total += self.count(str(name)) + 1
        return total

    def count_prompt(self, prompt: Any) -> int:
        """Prompt tokens of a legacy completions or embeddings input (string or list)."""
        if isinstance(prompt, str):
            return self.count(prompt)
        if isinstance(prompt, list):
            if prompt and all(isinstance(x, int) for x in prompt):
                return len(prompt)
            return sum(self.count_prompt(item) for item in prompt)
        return 0


# What Tollgate ships of cl100k_base: the file tiktoken downloads, gzipped, and the SHA-256
# tiktoken itself checks it against (tiktoken_ext/openai_public.py); pattern and special
# tokens as that plugin defines them.
_SHIPPED = "cl100k_base"
_SHIPPED_FILE = "cl100k_base.tiktoken.gz"
_SHIPPED_SHA256 = "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7"
_CL100K_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+"""
    r"""|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
)
_CL100K_SPECIAL = {
    "<|endoftext|>": 100257,
    "<|fim_prefix|>": 100258,
    "<|fim_middle|>": 100259,
    "<|fim_suffix|>": 100260,
    "<|endofprompt|>": 100276,
}


class EncodingFileCorrupt(Fault, ValueError):
    """The shipped encoding does not match tiktoken's published hash (a damaged install)."""


def shipped_ranks() -> dict[bytes, int]:
    """cl100k_base's merge ranks from the package, checked against the published SHA-256."""
    packed = resources.files("gateway.accounting").joinpath("encodings", _SHIPPED_FILE)
    data = gzip.decompress(packed.read_bytes())
    digest = hashlib.sha256(data).hexdigest()
    if digest != _SHIPPED_SHA256:
        raise EncodingFileCorrupt(
            f"{_SHIPPED_FILE} has SHA-256 {digest}, not tiktoken's {_SHIPPED_SHA256}: "
            "reinstall tollgate"
        )
    ranks = {}
    for line in data.splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


@functools.cache
def _lean_encoding(name: str) -> _Encoding:
    """tiktoken's `Encoding` keeps a Python copy of its merge ranks (100k byte strings, ~16 MB
    of a gateway's peak RSS: docs/benchmarks.md) that only pickling reads; the Rust core that
    encodes holds its own. Built here rather than taken from tiktoken's shared registry, so
    that copy can be emptied without changing an object other code in the process may use."""
    import tiktoken

    if name == _SHIPPED:
        spec: dict[str, Any] = {
            "name": name,
            "pat_str": _CL100K_PATTERN,
            "mergeable_ranks": shipped_ranks(),
            "special_tokens": dict(_CL100K_SPECIAL),
        }
    else:
        try:
            from tiktoken_ext.openai_public import ENCODING_CONSTRUCTORS
        except ImportError:  # pragma: no cover - tiktoken without its bundled plugin
            return tiktoken.get_encoding(name)
        constructor = ENCODING_CONSTRUCTORS.get(name)
        if constructor is None:
            return tiktoken.get_encoding(name)
        spec = constructor()
    encoding = tiktoken.Encoding(**spec)
    spec["mergeable_ranks"].clear()
    return encoding


def content_text(content: Any) -> str:
    """The text of a message's content, whether a string or a list of content parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(part.get("text", "")) for part in content if isinstance(part, Mapping))
    return ""


def anthropic_prompt_tokens(body: Mapping[str, Any], tokens: TokenCounter) -> int:
    """Tollgate's own count of an Anthropic Messages prompt (system prompt included)."""
    messages = body.get("messages")
    total = tokens.count_messages(messages if isinstance(messages, list) else ())
    return total + tokens.count(content_text(body.get("system")))


def prompt_tokens(endpoint: str, body: Mapping[str, Any], tokens: TokenCounter) -> int:
    """Tollgate's own count of any endpoint's prompt (for reservations and abandoned calls)."""
    if endpoint == "chat.completions":
        messages = body.get("messages")
        return tokens.count_messages(messages if isinstance(messages, list) else ())
    if endpoint in ("messages", "count_tokens"):
        return anthropic_prompt_tokens(body, tokens)
    if endpoint == "responses":
        return responses_prompt_tokens(body, tokens)
    return tokens.count_prompt(body.get("prompt", body.get("input")))


def responses_prompt_tokens(body: Mapping[str, Any], tokens: TokenCounter) -> int:
    """A Responses API prompt: its instructions and input items (messages' text, function
    calls' arguments and outputs), at the per-message overhead chat messages carry."""
    raw = body.get("input")
    total = tokens.count(content_text(body.get("instructions")))
    if isinstance(raw, str):
        return total + tokens.count_messages([{"role": "user", "content": raw}])
    items = raw if isinstance(raw, list) else ()
    messages = []
    for item in items:
        if not isinstance(item, Mapping):
            continue
        text = content_text(item.get("content")) + str(item.get("arguments") or "")
        output = item.get("output")
        text += output if isinstance(output, str) else content_text(output)
        messages.append({"role": str(item.get("role") or "tool"), "content": text})
    return total + tokens.count_messages(messages)
