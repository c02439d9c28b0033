"""What a caller has left, as the headers its SDK and tools already read.

OpenAI clients get `x-ratelimit-{limit,remaining,reset}-{requests,tokens}`, Anthropic clients
`anthropic-ratelimit-{requests,tokens}-{limit,remaining,reset}`; both get
`x-tollgate-budget-remaining-usd` and `-resets` for the tightest dollar budget on the call's
path. Everything comes from the counter values the call's own reservation returned (`Hold`), so
telling costs no store round-trip; and a call's cost (`x-tollgate-cost-usd`, `-saved-usd`) from
its record once sealed.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from gateway.accounting.ledger import Hold
from gateway.accounting.limits import Line
from gateway.call import Call, Dialect, Money

Headers = list[tuple[str, str]]
_STATE = "budgets"  # where the budgets policy keeps the call's hold (policies/budgets.py)


def _reset_openai(seconds: int) -> str:
    """OpenAI's duration spelling: `1s`, `6m0s`, `1h2m3s`."""
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    return f"{minutes}m{secs}s" if minutes else f"{secs}s"


def _reset_anthropic(now: float, seconds: int) -> str:
    """Anthropic's spelling: when it resets, RFC 3339."""
    return datetime.fromtimestamp(int(now) + seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


_NAMES = {
    ("openai", "requests"): ("x-ratelimit-limit-requests", "x-ratelimit-remaining-requests",
                             "x-ratelimit-reset-requests"),
    ("openai", "tokens"): ("x-ratelimit-limit-tokens", "x-ratelimit-remaining-tokens",
                           "x-ratelimit-reset-tokens"),
    ("anthropic", "requests"): ("anthropic-ratelimit-requests-limit",
                                "anthropic-ratelimit-requests-remaining",
                                "anthropic-ratelimit-requests-reset"),
    ("anthropic", "tokens"): ("anthropic-ratelimit-tokens-limit",
                              "anthropic-ratelimit-tokens-remaining",
                              "anthropic-ratelimit-tokens-reset"),
}  # fmt: skip


def _rate(dialect: Dialect, unit: str, left: int, line: Line, now: float) -> Headers:
    names = _NAMES[(dialect, unit)]
    seconds = line.window.seconds_left(now)
    reset = _reset_anthropic(now, seconds) if dialect == "anthropic" else _reset_openai(seconds)
    return [(names[0], str(line.limit)), (names[1], str(max(left, 0))), (names[2], reset)]


def rate_headers(dialect: Dialect, lines: Iterable[tuple[Line, int]], now: float) -> Headers:
    """For each unit (requests, tokens) the rate limit with the least left: (line, its counter's
    value with this call counted)."""
    return _told(dialect, lines, now, None, budgets=False)


def limit_headers(call: Call, cost: int | None = None) -> Headers:
    """Both kinds for a call that reserved (none for a call no budget or limit applies to).
    For the dollar budget, with `cost` (the call's actual cost, known for a whole body once
    recorded) its reservation is replaced by what it cost; without it (a stream, whose headers
    go out first) the worst case stays counted."""
    held = call.state.get(_STATE)
    if held is None:
        return []
    hold: Hold = held[0]
    return _told(call.dialect, zip(hold.lines, hold.values, strict=True), hold.at, cost)


def _told(
    dialect: Dialect,
    lines: Iterable[tuple[Line, int]],
    now: float,
    cost: int | None,
    budgets: bool = True,
) -> Headers:
    """One pass over the call's counters (on the hot path: a few microseconds)."""
    requests = tokens = dollars = None
    for line, value in lines:
        limit = line.limit
        if limit is None:
            continue
        if line.kind == "rate":
            left = limit - value
            if line.unit == "requests":
                if requests is None or left < requests[0]:
                    requests = (left, line)
            elif tokens is None or left < tokens[0]:
                tokens = (left, line)
        elif budgets and line.unit == "usd":
            left = limit - (value if cost is None else value - line.charge.amount + cost)
            if dollars is None or left < dollars[0]:
                dollars = (left, line)
    out: Headers = []
    if requests is not None:
        out += _rate(dialect, "requests", requests[0], requests[1], now)
    if tokens is not None:
        out += _rate(dialect, "tokens", tokens[0], tokens[1], now)
    if dollars is not None:
        left, line = dollars
        out.append(("x-tollgate-budget-remaining-usd", _dollars(max(left, 0))))
        if line.window.end is not None:
            out.append(("x-tollgate-budget-resets", str(line.window.end)))
    return out


def cost_headers(money: Money) -> Headers:
    return [
        ("x-tollgate-cost-usd", _dollars(money.cost)),
        ("x-tollgate-saved-usd", _dollars(money.saved)),
    ]


def cost_comment(money: Money) -> bytes:
    """The same figures for a stream: an SSE comment (SDKs skip lines starting with ':')."""
    return (
        f": x-tollgate-cost-usd={_dollars(money.cost)} "
        f"x-tollgate-saved-usd={_dollars(money.saved)}\n\n"
    ).encode()


def _dollars(nanos: int) -> str:
    """Fixed-point, no exponent, at most nine decimals, trailing zeros dropped: `0.000125`
    (integer arithmetic: Decimal costs several times more, on every call)."""
    whole, fraction = divmod(abs(nanos), 1_000_000_000)
    sign = "-" if nanos < 0 else ""
    return f"{sign}{whole}.{fraction:09d}".rstrip("0") if fraction else f"{sign}{whole}"
