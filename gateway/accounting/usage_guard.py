"""Token counts from upstreams are untrusted input: bounded, sanity-checked, never believed
when they cannot be true.

An upstream that reports `prompt_tokens: 1e16`, a negative count, a string, or more output than
the request allowed would otherwise overflow SQL columns and Redis counters (stopping auditing
and budgets for everyone) or credit a budget. Such usage is recorded as an upstream anomaly
(a decision on the call, so auditors see it) and replaced by Tollgate's own estimate or bound.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from gateway.call import Usage

# No real call comes near this (the largest context windows hold ~2M tokens); it keeps every
# cost and counter far inside 64 bits whatever a price says.
MAX_TOKENS = 10_000_000


def token_count(value: object) -> int | None:
    """A count as an upstream may state it: a non-negative integer (or integral float) no
    larger than MAX_TOKENS; anything else is None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if 0 <= value <= MAX_TOKENS else None
    if isinstance(value, float) and value.is_integer() and 0 <= value <= MAX_TOKENS:
        return int(value)
    return None


def read_count(mapping: object, name: str, bad: list[str]) -> int:
    """`mapping[name]` as a count (0 when absent); an implausible value is named in `bad`."""
    if not isinstance(mapping, Mapping):
        return 0
    value = mapping.get(name)
    if value is None:
        return 0
    count = token_count(value)
    if count is None:
        bad.append(f"{name}={_show(value)}")
        return 0
    return count


def flagged(usage: Usage, bad: list[str]) -> Usage:
    """The usage as read, or (when a count was implausible) an empty usage naming why, for the
    adapter to replace by its own estimate."""
    if not bad:
        return usage
    return Usage(estimated=True, anomaly="upstream reported " + ", ".join(bad))


def trusted(usage: Usage | None) -> Usage | None:
    """Reported usage worth believing (None: estimate instead)."""
    return usage if usage is not None and usage.anomaly is None else None


def estimated_instead(estimate: Usage, reported: Usage | None) -> Usage:
    """An estimate that says which reported usage it replaced."""
    if reported is None or reported.anomaly is None:
        return estimate
    return replace(estimate, estimated=True, anomaly=reported.anomaly)


def plausible(usage: Usage, output_cap: int | None) -> Usage:
    """Bounds a call's usage by what its request allows: cache counts within the prompt,
    output within the request's output cap (max tokens x completions) when it set one."""
    problems = []
    input_tokens, cached, written = (
        usage.input_tokens,
        usage.cached_tokens,
        usage.cache_write_tokens,
    )
    output = usage.output_tokens
    if cached + written > input_tokens:
        problems.append(f"cached {cached} + written {written} > prompt {input_tokens}")
        input_tokens = cached + written
    if output_cap is not None and output > output_cap:
        problems.append(f"output {output} > the request's cap {output_cap}")
        output = output_cap
    if not problems:
        return usage
    anomaly = "; ".join([*([usage.anomaly] if usage.anomaly else []), *problems])
    return replace(
        usage, input_tokens=input_tokens, output_tokens=output, estimated=True, anomaly=anomaly
    )


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
