"""What a caller has left, as the headers its SDK and tools already read.

OpenAI clients get `x-ratelimit-{limit,remaining,reset}-{requests,tokens}`, Anthropic clients
`anthropic-ratelimit-{requests,tokens}-{limit,remaining,reset}`; both get
`x-tollgate-budget-remaining-usd` and `-resets` for the tightest dollar budget on the call's
path. Everything comes from the counter values the call's own reservation returned (`Hold`), so
telling costs no store round-trip; and a call's cost (`x-tollgate-cost-usd`, `-saved-usd`) from
its record once sealed.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from gateway.accounting.ledger import Hold
from gateway.accounting.limits import Line
from gateway.accounting.pricing import usd
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


def rate_headers(dialect: Dialect, lines: list[tuple[Line, int]], now: float) -> Headers:
    """For each unit (requests, tokens) the rate limit with the least left: (line, its counter's
    value with this call counted)."""
    tightest: dict[str, tuple[int, Line]] = {}
    for line, value in lines:
        if line.kind != "rate" or line.limit is None:
            continue
        unit = "requests" if line.unit == "requests" else "tokens"
        left = line.limit - value
        held = tightest.get(unit)
        if held is None or left < held[0]:
            tightest[unit] = (left, line)
    out: Headers = []
    for unit, (left, line) in tightest.items():
        limit = line.limit or 0
        remaining = str(max(left, 0))
        seconds = line.window.seconds_left(now)
        if dialect == "anthropic":
            stem = f"anthropic-ratelimit-{unit}"
            out += [
                (f"{stem}-limit", str(limit)),
                (f"{stem}-remaining", remaining),
                (f"{stem}-reset", _reset_anthropic(now, seconds)),
            ]
        else:
            out += [
                (f"x-ratelimit-limit-{unit}", str(limit)),
                (f"x-ratelimit-remaining-{unit}", remaining),
                (f"x-ratelimit-reset-{unit}", _reset_openai(seconds)),
            ]
    return out


def budget_headers(lines: list[tuple[Line, int]], cost: int | None) -> Headers:
    """The dollar budget with the least left. With `cost` (the call's actual cost, known for a
    whole body once recorded) its reservation is replaced by what it cost; without it (a stream,
    whose headers go out first) the worst case stays counted."""
    best: tuple[int, Line] | None = None
    for line, value in lines:
        if line.kind != "budget" or line.unit != "usd" or line.limit is None:
            continue
        used = value if cost is None else value - line.charge.amount + cost
        left = line.limit - used
        if best is None or left < best[0]:
            best = (left, line)
    if best is None:
        return []
    left, line = best
    out = [("x-tollgate-budget-remaining-usd", _dollars(max(left, 0)))]
    if line.window.end is not None:
        out.append(("x-tollgate-budget-resets", str(line.window.end)))
    return out


def limit_headers(call: Call, cost: int | None = None) -> Headers:
    """Both kinds for a call that reserved (none for a call no budget or limit applies to)."""
    held = call.state.get(_STATE)
    if held is None:
        return []
    hold: Hold = held[0]
    lines = list(zip(hold.lines, hold.values, strict=True))
    return rate_headers(call.dialect, lines, hold.at) + budget_headers(lines, cost)


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
    """Fixed-point, no exponent, at most nine decimals, trailing zeros dropped: `0.000125`."""
    text = format(usd(nanos).quantize(Decimal("0.000000001")), "f")
    return text.rstrip("0").rstrip(".") if "." in text else text
