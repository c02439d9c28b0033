"""Usage in one internal form whatever the dialect.

Internally `input_tokens` counts every prompt token (OpenAI's convention), `cached_tokens` the
ones read from a prompt cache and `cache_write_tokens` the ones written to it. Anthropic reports
the three separately (`input_tokens` excludes both cache counts), so they are summed here.
"""

from __future__ import annotations

from typing import Any

from gateway.accounting.usage_guard import flagged, read_count
from gateway.call import Usage


def usage_from_anthropic(usage: Any, output_tokens: int | None = None) -> Usage | None:
    """Anthropic's usage in internal form; implausible counts give a usage flagged with the
    anomaly (usage_guard.py), for the caller to estimate instead."""
    if not isinstance(usage, dict) or "input_tokens" not in usage:
        return None
    bad: list[str] = []
    read = read_count(usage, "cache_read_input_tokens", bad)
    write = read_count(usage, "cache_creation_input_tokens", bad)
    out = read_count(usage, "output_tokens", bad) if output_tokens is None else output_tokens
    reported = Usage(
        input_tokens=read_count(usage, "input_tokens", bad) + read + write,
        output_tokens=out,
        cached_tokens=read,
        cache_write_tokens=write,
    )
    return flagged(reported, bad)


def anthropic_usage(usage: Usage) -> dict[str, int]:
    """Internal usage in Anthropic's shape (prompt tokens split into plain and cache counts)."""
    plain = max(usage.input_tokens - usage.cached_tokens - usage.cache_write_tokens, 0)
    return {
        "input_tokens": plain,
        "cache_creation_input_tokens": usage.cache_write_tokens,
        "cache_read_input_tokens": usage.cached_tokens,
        "output_tokens": usage.output_tokens,
    }


def openai_usage(usage: Usage) -> dict[str, Any]:
    return {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.input_tokens + usage.output_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_tokens},
    }
