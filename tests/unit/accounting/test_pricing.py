"""Prices -> nano-dollar costs, and a config that leaves a target unpriced is rejected."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from gateway.accounting.pricing import Price, PriceRule, PriceTable
from gateway.call import Target, Usage
from gateway.config.loader import load_config
from gateway.config.prices import price_table
from gateway.errors import ConfigError


def test_cost_bills_cached_and_cache_write_tokens_at_their_prices() -> None:
    price = Price(Decimal("3"), Decimal("15"), Decimal("0.30"), Decimal("3.75"))
    usage = Usage(input_tokens=1000, output_tokens=200, cached_tokens=600, cache_write_tokens=100)
    # 300 plain x 3 + 600 x 0.30 + 100 x 3.75 + 200 x 15, per 1M tokens, in nano-dollars
    assert price.cost(usage) == 300 * 3000 + 600 * 300 + 100 * 3750 + 200 * 15000
    assert price.worst_case(1000, 200) == 1000 * 3750 + 200 * 15000


def test_tiny_calls_keep_their_cost() -> None:
    price = Price.flat(0.08, 0.16, "x")
    assert price.cost(Usage(input_tokens=3, output_tokens=1)) == 3 * 80 + 160


def test_gpu_hour_derivation() -> None:
    price = Price.per_gpu_hour(Decimal("3.6"), Decimal("10000"), Decimal("1000"))
    # $3.60/h at 1,000 decode tokens/s = $1 per 1M output tokens; prefill 10x faster.
    assert price.output == Decimal(1) and price.input == Decimal("0.1")
    assert price.cached_input == 0


def test_most_specific_rule_wins_and_sim_prices_are_a_fallback() -> None:
    table = PriceTable(
        [
            PriceRule("*", "*", Price.free()),
            PriceRule("openai", "*", Price.flat(1.0, 2.0, "a")),
            PriceRule("openai", "gpt-x", Price.flat(5.0, 10.0, "b")),
            PriceRule("sim", "m", Price.flat(9.0, 9.0, "sim"), fallback=True),
            PriceRule("vllm", "*", Price.flat(1.0, 1.0, "fp16")),
            PriceRule("vllm", "*", Price.flat(0.2, 0.2, "int4"), tier="int4"),
        ]
    )
    assert table.price(Target("vllm", "llama", "int4")).source == "int4"  # type: ignore[union-attr]
    assert table.price(Target("vllm", "llama", "fp16")).source == "fp16"  # type: ignore[union-attr]
    assert table.price(Target("openai", "gpt-x")).source == "b"  # type: ignore[union-attr]
    assert table.price(Target("openai", "gpt-y")).source == "a"  # type: ignore[union-attr]
    assert table.price(Target("sim", "m")).source == "free"  # type: ignore[union-attr]


BASE = """\
version: 1
backends:
  up: {type: openai, base_url: "http://127.0.0.1:9/v1"}
  local:
    type: sim
    models: [{name: m, input_price_per_mtok: 0.5, output_price_per_mtok: 1.5}]
models:
  chat: {tiers: {v: [{backend: up, model: gpt}], l: [{backend: local, model: m}]}, default_tier: v}
"""


def load(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "tollgate.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    return [p.replace(str(tmp_path) + "/", "") for p in info.value.problems]


def test_unpriced_target_is_a_config_error(tmp_path: Path) -> None:
    assert load(tmp_path, BASE) == [
        "tollgate.yaml:8:22: models.chat.tiers.v[0]: no price for backend 'up' model 'gpt': "
        "add a `pricing:` entry (or mark it `free: true`)"
    ]


def test_sim_models_are_priced_by_their_own_config(tmp_path: Path) -> None:
    path = tmp_path / "tollgate.yaml"
    path.write_text(BASE + "pricing:\n  - {backend: up, model: gpt, input: 2, output: '8'}\n")
    table = price_table(load_config(path, env={}).config)
    assert table.price(Target("local", "m")).output == Decimal("1.5")  # type: ignore[union-attr]
    assert table.price(Target("up", "gpt")).output == Decimal(8)  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (
            "pricing:\n  - {backend: up, input: 1}\n",
            "tollgate.yaml:10:5: pricing[0]: Value error, set both input and output",
        ),
        (
            "pricing:\n  - {backend: up, input: 1, output: 1, free: true}\n",
            "tollgate.yaml:10:5: pricing[0]: Value error, give exactly one of",
        ),
        (
            "pricing:\n  - {backend: up, gpu_hour_usd: 2}\n",
            "tollgate.yaml:10:5: pricing[0]: Value error, gpu_hour_usd needs",
        ),
        (
            "pricing: [{free: true}]\nlimits:\n  timezone: Mars/Olympus\n",
            "tollgate.yaml:11:13: limits.timezone: Value error, unknown time zone",
        ),
        (
            "pricing: [{free: true}]\nlimits:\n  budgets:\n    - {name: b, scope: team, usd: 5}\n",
            "tollgate.yaml:12:7: limits.budgets[0]: Value error, `subject` is required",
        ),
        (
            "pricing: [{free: true}]\nlimits:\n  budgets:\n"
            "    - {name: b, scope: team, subject: x}\n",
            "tollgate.yaml:12:7: limits.budgets[0]: Value error, set usd and/or tokens",
        ),
        (
            "pricing: [{free: true}]\nlimits:\n  rate_limits:\n"
            "    - {name: r, scope: key, subject: '*', model: nope, rpm: 1}\n",
            "tollgate.yaml:12:50: limits.rate_limits[0].model: unknown model 'nope'",
        ),
        (
            "pricing: [{free: true}]\nlimits:\n  budgets:\n"
            "    - {name: b, scope: global, tokens: 1}\n"
            "    - {name: b, scope: global, tokens: 2}\n",
            "tollgate.yaml:13:14: limits.budgets[1].name: 'b' is already defined at "
            "tollgate.yaml:12:14",
        ),
    ],
)
def test_money_config_errors_say_where_and_why(tmp_path: Path, extra: str, expected: str) -> None:
    found = load(tmp_path, BASE + extra)
    assert any(p.startswith(expected) for p in found), found
