"""The price table a config describes: `pricing:` rules, then each simulated model's own prices
and the built-in catalog's list prices for vendor targets (catalog.py).

Simulated backends declare their price in their model entries (that is how the simulator shows
what a tier costs), and vendor models the catalog lists have theirs, so neither needs a
`pricing:` rule; every other target must match one, or be marked free, or the config is
rejected.
"""

from __future__ import annotations

from gateway.accounting.pricing import Price, PriceRule, PriceTable
from gateway.call import Target
from gateway.config.accounting_schema import PriceConfig
from gateway.config.catalog import Catalog, CatalogPrice, builtin_catalog, vendor_of
from gateway.config.models_schema import ReferenceConfig
from gateway.config.schema import Config, SimBackend


def price_of(rule: PriceConfig, source: str) -> Price:
    if rule.free:
        return Price.free(source)
    if rule.gpu_hour_usd is not None:
        assert rule.prefill_tokens_per_s is not None and rule.decode_tokens_per_s is not None
        return Price.per_gpu_hour(
            rule.gpu_hour_usd, rule.prefill_tokens_per_s, rule.decode_tokens_per_s
        )
    assert rule.input is not None and rule.output is not None
    cached = rule.cached_input if rule.cached_input is not None else rule.input
    write = rule.cache_write if rule.cache_write is not None else rule.input
    return Price(rule.input, rule.output, cached, write, source)


def all_targets(config: Config) -> list[Target]:
    """Every replica and explicit reference the config names (their prices are resolved once)."""
    out = [
        Target(r.backend, r.model, tier)
        for model in config.models.values()
        for tier, spec in model.resolved_tiers().items()
        for r in spec.replicas
    ]
    for model in config.models.values():
        if isinstance(model.reference, ReferenceConfig):
            out.append(Target(model.reference.backend, model.reference.model))
    return out


def catalog_prices(
    config: Config, catalog: Catalog | None = None
) -> dict[tuple[str, str], CatalogPrice]:
    """(backend, model) -> the catalog's entry, for every vendor target the catalog lists."""
    catalog = catalog if catalog is not None else builtin_catalog()
    out: dict[tuple[str, str], CatalogPrice] = {}
    for target in all_targets(config):
        backend = config.backends.get(target.backend)
        vendor = vendor_of(backend) if backend is not None else None
        found = catalog.lookup(vendor, target.model) if vendor is not None else None
        if found is not None:
            out[(target.backend, target.model)] = found
    return out


def price_table(config: Config) -> PriceTable:
    rules = [price_of(r, f"pricing[{i}]") for i, r in enumerate(config.pricing)]
    table = [
        PriceRule(r.backend, r.model, p, tier=r.tier)
        for r, p in zip(config.pricing, rules, strict=True)
    ]
    for name, backend in config.backends.items():
        if isinstance(backend, SimBackend):
            for m in backend.models:
                sim = Price.flat(m.input_price_per_mtok, m.output_price_per_mtok, "simulator")
                # Lowest precedence: any matching pricing rule still wins.
                table.append(PriceRule(name, m.name, sim, fallback=True))
    for (vendor_backend, model), listed in catalog_prices(config).items():
        table.append(PriceRule(vendor_backend, model, listed.price, fallback=True))
    return PriceTable(table, all_targets(config))
