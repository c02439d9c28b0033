"""How much a request can generate: what budgets reserve for and what bounds its usage.

One completion per `n` (and per `best_of` on legacy completions, where every candidate is
generated and billed), per prompt of a prompt array; output up to the request's max tokens
for each.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def _positive(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def prompt_count(body: Mapping[str, Any]) -> int:
    """Prompts in a legacy completions request: a string or a token array is one; an array of
    strings or of token arrays is one per element."""
    prompt = body.get("prompt")
    if isinstance(prompt, list) and prompt and not isinstance(prompt[0], int):
        return len(prompt)
    return 1


def completions(endpoint: str, body: Mapping[str, Any]) -> int:
    """How many completions the request generates (and is billed for)."""
    if endpoint in ("embeddings", "count_tokens"):
        return 0
    n = _positive(body.get("n")) or 1
    if endpoint == "completions":
        return max(n, _positive(body.get("best_of")) or 1) * prompt_count(body)
    return n


def max_output(body: Mapping[str, Any]) -> int | None:
    """The request's own output limit per completion, if it sets one (`max_output_tokens`:
    the Responses API's)."""
    return (
        _positive(body.get("max_completion_tokens"))
        or _positive(body.get("max_tokens"))
        or _positive(body.get("max_output_tokens"))
    )


def output_cap(endpoint: str, body: Mapping[str, Any], default: int | None = None) -> int | None:
    """The most output tokens the request can produce (None: unbounded, no default given)."""
    count = completions(endpoint, body)
    if count == 0:
        return 0
    each = max_output(body) or default
    return None if each is None else each * count


OUTPUT_FIELDS = ("max_tokens", "max_completion_tokens", "max_output_tokens")


def output_field(endpoint: str, body: Mapping[str, Any]) -> str:
    """The field a policy caps or sets the output limit in: the one the request uses, else
    what its API calls it (`max_output_tokens` for the Responses API, else `max_tokens`)."""
    found = next((f for f in OUTPUT_FIELDS if body.get(f) is not None), None)
    if found is not None:
        return found
    return "max_output_tokens" if endpoint == "responses" else "max_tokens"
