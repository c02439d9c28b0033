"""Prices and costs. Money is integer nano-dollars (USD x 1e9) end to end, never floats.

Micro-dollars, the obvious unit, round a 10-token call on a $0.08-per-million tier to zero;
nano-dollars keep every call's cost exact to well under a cent per billion calls, and an int64
still holds 9 billion dollars, which is plenty for one counter.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal

from gateway.call import Target, Usage

NANOS_PER_USD = 1_000_000_000
# No one call costs a million dollars: a price typo times a huge usage is clamped here, so
# every counter and column stays far inside 64 bits.
MAX_CALL_NANOS = 10**15
_NANOS_PER_TOKEN_AT_1_PER_M = Decimal(NANOS_PER_USD) / Decimal(1_000_000)  # = 1000


def usd(nanos: int) -> Decimal:
    """Nano-dollars as a Decimal dollar amount (for display and JSON)."""
    return Decimal(nanos) / NANOS_PER_USD


def nanos_of_usd(amount: Decimal | int | str) -> int:
    return int((Decimal(amount) * NANOS_PER_USD).to_integral_value())


@dataclass(frozen=True, slots=True)
class Price:
    """USD per 1M tokens. `cached_input` bills prompt tokens read from a cache, `cache_write`
    prompt tokens written to one (Anthropic); both default to `input`."""

    input: Decimal
    output: Decimal
    cached_input: Decimal
    cache_write: Decimal
    source: str = ""

    @classmethod
    def free(cls, source: str = "free") -> Price:
        zero = Decimal(0)
        return cls(zero, zero, zero, zero, source)

    @classmethod
    def flat(cls, input_per_m: float, output_per_m: float, source: str) -> Price:
        """Prices given as floats (the simulator's config), read via their decimal repr."""
        pin, pout = Decimal(repr(input_per_m)), Decimal(repr(output_per_m))
        return cls(pin, pout, pin, pin, source)

    @classmethod
    def per_gpu_hour(
        cls, usd_per_hour: Decimal, prefill_tokens_per_s: Decimal, decode_tokens_per_s: Decimal
    ) -> Price:
        """A local tier's price derived from what its GPU costs and the throughput measured on
        it: a token costs the GPU-seconds it takes. Prompt tokens found in the prefix cache
        cost no prefill, so the cached price is zero."""
        per_m = Decimal(1_000_000) / Decimal(3600)
        prefill = usd_per_hour * per_m / prefill_tokens_per_s
        decode = usd_per_hour * per_m / decode_tokens_per_s
        return cls(prefill, decode, Decimal(0), prefill, "gpu-hour")

    def cost(self, usage: Usage) -> int:
        """Nano-dollars for this usage, rounded up to the next nano-dollar.

        `usage.input_tokens` counts every prompt token, cached and cache-written included
        (OpenAI's convention; other dialects are normalised to it)."""
        plain = max(usage.input_tokens - usage.cached_tokens - usage.cache_write_tokens, 0)
        total = (
            plain * self.input
            + usage.cached_tokens * self.cached_input
            + usage.cache_write_tokens * self.cache_write
            + usage.output_tokens * self.output
        )
        return min(math.ceil(total * _NANOS_PER_TOKEN_AT_1_PER_M), MAX_CALL_NANOS)

    def worst_case(self, input_tokens: int, output_tokens: int) -> int:
        """The most a call can cost: every prompt token at the dearest input price."""
        dearest = max(self.input, self.cached_input, self.cache_write)
        total = input_tokens * dearest + output_tokens * self.output
        return min(math.ceil(total * _NANOS_PER_TOKEN_AT_1_PER_M), MAX_CALL_NANOS)


@dataclass(frozen=True, slots=True)
class PriceRule:
    backend: str  # "*" for any
    model: str  # "*" for any
    price: Price
    fallback: bool = False  # used only when no other rule matches (a simulator's own price)
    tier: str = "*"

    def matches(self, target: Target) -> bool:
        return (
            self.backend in ("*", target.backend)
            and self.model in ("*", target.model)
            and self.tier in ("*", target.tier)
        )

    @property
    def specificity(self) -> int:
        if self.fallback:
            return -1
        return (self.backend != "*") * 4 + (self.model != "*") * 2 + (self.tier != "*")


class PriceTable:
    """(backend, upstream model, tier) -> Price; the most specific rule wins, then the first.

    Resolved once per target at load time, so pricing a call is one dict lookup."""

    def __init__(self, rules: Iterable[PriceRule], targets: Iterable[Target] = ()) -> None:
        self._rules = tuple(rules)
        self._resolved: dict[tuple[str, str, str | None], Price] = {}
        for target in targets:
            price = self._match(target)
            if price is not None:
                self._resolved[(target.backend, target.model, target.tier)] = price

    def _match(self, target: Target) -> Price | None:
        best: PriceRule | None = None
        for rule in self._rules:
            if rule.matches(target) and (best is None or rule.specificity > best.specificity):
                best = rule
        return best.price if best else None

    def price(self, target: Target) -> Price | None:
        found = self._resolved.get((target.backend, target.model, target.tier))
        return found if found is not None else self._match(target)

    def unpriced(self, targets: Iterable[Target]) -> list[Target]:
        return [t for t in targets if self.price(t) is None]

    def cost(self, target: Target, usage: Usage) -> int:
        price = self.price(target)
        return price.cost(usage) if price is not None else 0
