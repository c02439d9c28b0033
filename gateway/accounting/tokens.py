"""Token counting with tiktoken, and a deterministic estimate when the encoding is unavailable.

The gateway must keep serving when tiktoken cannot load its encoding (no network, no cache):
it then estimates, logs that once, and marks every count it makes as estimated.
"""

from __future__ import annotations

import functools
import logging
import re
import zlib
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

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
                "tiktoken encoding %s unavailable (%s); token counts will be estimated",
                encoding_name,
                type(exc).__name__,
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


@functools.cache
def _lean_encoding(name: str) -> _Encoding:
    """tiktoken's `Encoding` keeps a Python copy of its merge ranks (100k byte strings, ~16 MB of
    a gateway's ~120 MB peak RSS) that only pickling reads; the Rust core that encodes holds its
    own. Built from the plugin's constructor rather than tiktoken's shared registry, so that copy
    can be emptied without changing an object other code in the process may use."""
    import tiktoken

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
    return tokens.count_prompt(body.get("prompt", body.get("input")))
