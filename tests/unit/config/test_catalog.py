"""The built-in price catalog: which targets it prices, how a model's snapshot finds its entry,
that a `pricing:` rule wins over it, and what `tollgate prices` says about each figure."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest
from click.testing import CliRunner

from gateway.call import Target, Usage
from gateway.cli.main import main
from gateway.config.catalog import builtin_catalog, parse_catalog
from gateway.config.loader import load_config
from gateway.config.prices import price_table
from gateway.errors import ConfigError

VENDORS = """\
version: 1
backends:
  claude: {type: anthropic, api_key_env: TG_ANT}
  openai: {type: openai, base_url: "https://api.openai.com/v1", api_key_env: TG_OAI}
  azure: {type: azure_openai, endpoint: "https://x.openai.azure.com", api_version: "2024-10-21"}
  vllm: {type: openai, base_url: "http://127.0.0.1:9/v1"}
models:
  sonnet: {backend: claude, model: claude-sonnet-4-5-20250929}
  mini: {backend: openai, model: gpt-4o-mini}
  az: {backend: azure, model: gpt-4.1}
  local: {backend: vllm, model: llama}
pricing:
  - {backend: vllm, gpu_hour_usd: "2", prefill_tokens_per_s: 5000, decode_tokens_per_s: 500}
"""


ENV = {"TG_ANT": "sk-ant", "TG_OAI": "sk-oai"}
LOCAL_PRICE = (
    '  - {backend: vllm, gpu_hour_usd: "2", prefill_tokens_per_s: 5000, decode_tokens_per_s: 500}\n'
)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "tollgate.yaml"
    path.write_text(text)
    return path


def test_every_shipped_entry_is_valid_and_dated() -> None:
    catalog = builtin_catalog()
    assert len(catalog) >= 25
    for vendor in ("openai", "anthropic", "azure_openai"):
        for entry in catalog.vendors[vendor].values():
            assert entry.source.startswith("https://") and len(entry.as_of) == 10
            assert entry.price.output >= entry.price.input or entry.price.output == 0


def test_a_snapshot_finds_its_model_and_only_its_model() -> None:
    catalog = builtin_catalog()
    dated = catalog.lookup("anthropic", "claude-sonnet-4-5-20250929")
    assert dated is not None and dated.model == "claude-sonnet-4-5"
    assert catalog.lookup("openai", "gpt-4o-2024-08-06").model == "gpt-4o"  # type: ignore[union-attr]
    assert catalog.lookup("openai", "gpt-4o-mini").model == "gpt-4o-mini"  # type: ignore[union-attr]
    assert catalog.lookup("openai", "gpt-4o-turbo-preview") is None
    assert catalog.lookup("anthropic", "gpt-4o") is None


def test_a_bad_catalog_is_refused() -> None:
    with pytest.raises(ValueError, match="input"):
        parse_catalog("x: {source: s, as_of: d, models: {m: {input: '-1', output: '1'}}}")


def test_vendor_targets_need_no_pricing_rule_and_are_priced_from_the_catalog(
    tmp_path: Path,
) -> None:
    config = load_config(write(tmp_path, VENDORS), env=ENV).config
    table = price_table(config)
    sonnet = table.price(Target("claude", "claude-sonnet-4-5-20250929", "default"))
    assert (
        sonnet is not None and sonnet.input == Decimal(3) and sonnet.cache_write == Decimal("3.75")
    )
    assert "anthropic.com" in sonnet.source
    usage = Usage(input_tokens=1_000_000, output_tokens=1_000_000)
    assert table.cost(Target("openai", "gpt-4o-mini", "default"), usage) == 750_000_000  # $0.75
    assert table.price(Target("azure", "gpt-4.1", "default")).input == 2  # type: ignore[union-attr]


def test_a_local_server_naming_a_vendor_model_still_needs_a_price(tmp_path: Path) -> None:
    text = VENDORS.replace("model: llama", "model: gpt-4o").replace("pricing:\n" + LOCAL_PRICE, "")
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text), env=ENV)
    assert any("no price for backend 'vllm' model 'gpt-4o'" in p for p in info.value.problems)


def test_a_vendor_model_the_catalog_does_not_list_still_needs_a_price(tmp_path: Path) -> None:
    text = VENDORS.replace("gpt-4o-mini", "gpt-9-experimental")
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text), env=ENV)
    assert any("gpt-9-experimental" in p for p in info.value.problems)


def test_a_pricing_rule_overrides_the_catalog(tmp_path: Path) -> None:
    text = VENDORS + "  - {model: gpt-4o-mini, input: 0.1, output: 0.2}\n"
    table = price_table(load_config(write(tmp_path, text), env=ENV).config)
    price = table.price(Target("openai", "gpt-4o-mini", "default"))
    assert price is not None and price.input == Decimal("0.1") and price.source == "pricing[1]"


def test_prices_command_says_where_each_figure_comes_from(tmp_path: Path) -> None:
    path = write(tmp_path, VENDORS)
    runner = CliRunner()
    result = runner.invoke(main, ["prices", "--config", str(path), "--json"])
    assert result.exit_code == 0, result.output
    rows = {r["alias"]: r for r in json.loads(result.output)}
    assert rows["sonnet"]["source"].startswith("catalog: anthropic claude-sonnet-4-5 (https://")
    assert rows["sonnet"]["batch_discount"] == "0.5" and rows["sonnet"]["output"] == "15"
    assert rows["local"]["source"] == "gpu-hour" and rows["local"]["batch_discount"] is None
    one = runner.invoke(main, ["prices", "--config", str(path), "--model", "mini"])
    assert one.exit_code == 0
    lines = one.output.splitlines()
    assert lines[0].split()[:4] == ["ALIAS", "TIER", "BACKEND", "MODEL"]
    assert lines[1].split()[:8] == ["mini", "default", "openai", "gpt-4o-mini", "0.15", "0.075",
                                    "0.15", "0.60"]  # fmt: skip
    missing = runner.invoke(main, ["prices", "--config", str(path), "--model", "nope"])
    assert missing.exit_code != 0 and "aliases: sonnet" in missing.output
