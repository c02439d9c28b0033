"""Masks secrets and personal data in captured content before it is journaled or stored.

Built-in patterns: emails, API keys and bearer tokens, card numbers (Luhn-checked, so order
numbers and timestamps survive), phone numbers in international format (+CC ...).
Each match becomes `[REDACTED:<name>]`.

Redaction runs on the request path, so it must be linear in the text: every built-in pattern
starts a match only where a run of its characters starts (a lookbehind) and bounds what it
consumes, so a 60 KB run of letters costs one pass, not a match attempt per position (the old
email pattern took 4 s on it, stalling every call). Content beyond `MAX_REDACTED_CHARS` is not
stored at all (a marker says how much was dropped), so even an operator's own pattern or a
10 MB body cannot hold the event loop for long.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import partial

BUILTIN: Mapping[str, str] = {
    "email": (
        r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]{1,64}"
        r"@[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63}){0,8}\.[A-Za-z]{2,24}\b"
    ),
    "api_key": (
        r"\b(?:sk|pk|rk|tg)-[A-Za-z0-9_-]{16,}"
        r"|\bAKIA[0-9A-Z]{16}\b"
        r"|\bgh[pousr]_[A-Za-z0-9]{30,}"
        r"|(?i:bearer)\s+[A-Za-z0-9._~+/-]{16,}=*"
    ),
    "card_number": r"\b(?:\d[ -]?){12,18}\d\b",
    # International format only (+CC ...): bare digit runs are too often order numbers or times.
    "phone": r"(?<![\w+])\+\d{1,3}[ .-]?\(?\d{1,4}\)?(?:[ .-]?\d{2,4}){2,4}\b",
}


def _luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


MAX_REDACTED_CHARS = 256 * 1024
TRUNCATED = "[REDACTED: {} more characters not stored]"


class Redactor:
    """Callable text -> text; patterns are compiled once, at config load."""

    def __init__(self, names: tuple[str, ...], extra: Mapping[str, str]) -> None:
        self._patterns = [(n, re.compile(BUILTIN[n])) for n in names]
        self._patterns += [(n, re.compile(p)) for n, p in extra.items()]

    def __call__(self, text: str) -> str:
        rest = len(text) - MAX_REDACTED_CHARS
        if rest > 0:
            text = text[:MAX_REDACTED_CHARS]
        for name, pattern in self._patterns:
            text = pattern.sub(partial(self._mask, name), text)
        return text + TRUNCATED.format(rest) if rest > 0 else text

    @staticmethod
    def _mask(name: str, match: re.Match[str]) -> str:
        if name == "card_number":
            digits = re.sub(r"\D", "", match.group(0))
            if not (13 <= len(digits) <= 19 and _luhn(digits)):
                return match.group(0)
        return f"[REDACTED:{name}]"
