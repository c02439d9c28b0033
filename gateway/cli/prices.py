"""`tollgate prices`: what each target of the config is priced at, and where the figure comes
from (a `pricing:` rule, the simulator's model entry, or the built-in catalog with its source
and date), so a price can be checked before the first bill."""

from __future__ import annotations

import click

from gateway.accounting.pricing import Price
from gateway.call import Target
from gateway.cli.helpers import config_option, json_option, load_or_exit, show
from gateway.config.prices import catalog_prices, price_table
from gateway.config.schema import Config


@click.command()
@config_option
@json_option
@click.option("--model", "model", help="Only this alias, or this upstream model.")
def prices(config_path: str | None, as_json: bool, model: str | None) -> None:
    """Per alias, tier and replica: USD per 1M tokens and where each figure comes from."""
    from gateway.settings import Settings

    path = Settings(config_path=config_path).resolved_config_path()
    config: Config = load_or_exit(path, check_env=False).config
    rows = price_rows(config, model)
    if model is not None and not rows:
        known = ", ".join(config.models)
        raise click.ClickException(f"no alias or upstream model {model!r} (aliases: {known})")
    show(rows, as_json, lambda: _table(rows))


def price_rows(config: Config, only: str | None = None) -> list[dict[str, object]]:
    table = price_table(config)
    listed = catalog_prices(config)
    rows: list[dict[str, object]] = []
    for alias, spec in config.models.items():
        for tier, resolved in spec.resolved_tiers().items():
            for replica in resolved.replicas:
                if only not in (None, alias, replica.model):
                    continue
                target_price = table.price(Target(replica.backend, replica.model, tier))
                catalog = listed.get((replica.backend, replica.model))
                rows.append(
                    {
                        "alias": alias,
                        "tier": tier,
                        "backend": replica.backend,
                        "model": replica.model,
                        **_figures(target_price),
                        "batch_discount": (
                            str(catalog.batch_discount)
                            if catalog is not None
                            and catalog.batch_discount is not None
                            and target_price is catalog.price
                            else None
                        ),
                    }
                )
    return rows


def _figures(price: Price | None) -> dict[str, object]:
    if price is None:
        return {"input": None, "cached_input": None, "cache_write": None, "output": None,
                "source": "unpriced"}  # fmt: skip
    return {
        "input": str(price.input),
        "cached_input": str(price.cached_input),
        "cache_write": str(price.cache_write),
        "output": str(price.output),
        "source": _source(price.source),
    }


def _source(source: str) -> str:
    if source.startswith("pricing["):
        return f"{source} in the config"
    return source


def _table(rows: list[dict[str, object]]) -> str:
    head = ("ALIAS", "TIER", "BACKEND", "MODEL", "INPUT", "CACHED", "WRITE", "OUTPUT", "BATCH",
            "SOURCE")  # fmt: skip
    keys = ("alias", "tier", "backend", "model", "input", "cached_input", "cache_write",
            "output", "batch_discount", "source")  # fmt: skip
    lines = [head] + [tuple("-" if r[k] is None else str(r[k]) for k in keys) for r in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    text = "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in lines
    )
    return text + "\n(USD per 1M tokens; BATCH: the vendor's Batch API discount)"
