"""Removes the gateway's own upstream secrets from text that leaves it (client messages, logs,
audit events): the exact values configured for backends, and anything shaped like a bearer
token or an API key."""

from __future__ import annotations

import re
from collections.abc import Iterable

# Linear-time shapes (no nested quantifiers): a bearer credential, common API key prefixes.
_SHAPES = re.compile(
    r"(?i:bearer)\s+[A-Za-z0-9._~+/=-]{8,}"
    r"|\b(?:sk|pk|rk|tg)-[A-Za-z0-9_-]{8,}"
    r"|\bsk-ant-[A-Za-z0-9_-]{8,}"
    r"|\bAKIA[0-9A-Z]{16}\b"
)
REDACTED = "[redacted]"


class Scrubber:
    """Callable text -> text. Built once per runtime from the secrets its backends use."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets = sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        return _SHAPES.sub(REDACTED, text)
