"""Cost, counterfactual cost and savings of a finished call, computed here and nowhere else.

The same Money travels in the CallRecord to the audit log, the budgets and (later) the traces,
so what an auditor sums in SQL is what finance sees on the dashboard.
"""

from __future__ import annotations

from collections.abc import Mapping

from gateway.accounting.pricing import PriceTable
from gateway.call import NO_MONEY, Money, Outcome, Target, Usage


class Costing:
    """Prices calls against one config's price table.

    `references` maps each model alias to what a plain proxy would have used (its `reference`:
    a tier's replicas, or one explicit backend and model; never the order of the YAML): the
    counterfactual bills the call's usage there with every prompt token uncached, at the
    cheapest of them, so a saving is never overstated. Cached prompt tokens on a local engine
    are prefix reuse; on a vendor API they are the provider's prompt cache. Tokens that failed
    attempts consumed (a timeout after the upstream had the prompt) are what resilience cost:
    part of the call's cost, and a negative line of its savings, so the parts still add up.
    """

    def __init__(
        self,
        prices: PriceTable,
        references: Mapping[str, tuple[Target, ...]],
        local: frozenset[str],
    ) -> None:
        self.prices = prices
        self._references = references
        self._local = local

    def money(self, alias: str, outcome: Outcome) -> Money:
        resilience = self._resilience(outcome)
        money = self._served(alias, outcome)
        if not resilience:
            return money
        return Money(
            money.cost + resilience,
            money.counterfactual,
            (*money.savings, ("resilience", -resilience)),
        )

    def _served(self, alias: str, outcome: Outcome) -> Money:
        usage = outcome.usage
        if usage is None:
            return NO_MONEY
        uncached = Usage(input_tokens=usage.input_tokens, output_tokens=usage.output_tokens)
        reference = self._references.get(alias, ())
        target = outcome.target
        if target is None:
            counterfactual = self._reference_cost(reference, uncached)
            if outcome.cache in ("exact", "semantic") and counterfactual:
                # Answered by Tollgate from its cache: nothing spent upstream.
                return Money(0, counterfactual, ((f"{outcome.cache}_cache", counterfactual),))
            return NO_MONEY
        if outcome.status >= 400 and not outcome.disconnected and not outcome.partial:
            return NO_MONEY  # an upstream error bills nothing
        cost = self.prices.cost(target, usage)
        plain = self.prices.cost(target, uncached)
        if not reference or target in reference:
            counterfactual = plain
        else:
            counterfactual = self._reference_cost(reference, uncached)
        savings: list[tuple[str, int]] = []
        if counterfactual != plain:
            savings.append(("tier_routing", counterfactual - plain))
        if plain != cost:
            savings.append((self._cache_kind(target), plain - cost))
        return Money(cost, counterfactual, tuple(savings))

    def would_cost(self, targets: tuple[Target, ...], usage: Usage) -> int:
        """What this usage would have cost served by one of `targets` (the cheapest): a shadow
        rule's route, priced so ops see what enforcing it would save."""
        return self._reference_cost(targets, usage)

    def _reference_cost(self, reference: tuple[Target, ...], usage: Usage) -> int:
        return min((self.prices.cost(t, usage) for t in reference), default=0)

    def _resilience(self, outcome: Outcome) -> int:
        """What the failed attempts that consumed tokens cost, at their replicas' prices."""
        total = 0
        for attempt in outcome.attempts:
            if attempt.usage is not None:
                target = Target(attempt.backend, attempt.model, attempt.tier)
                total += self.prices.cost(target, attempt.usage)
        return total

    def _cache_kind(self, target: Target) -> str:
        price = self.prices.price(target)
        local = target.backend in self._local or (price is not None and price.source == "gpu-hour")
        return "prefix_reuse" if local else "provider_prompt_cache"
