"""The price catalog shipped with Tollgate (data/price_catalog.yaml): vendors' list prices, so
a vendor target needs no hand-written `pricing:` rule. A `pricing:` rule always wins over it.

Which backends it applies to: Anthropic and Azure OpenAI always, OpenAI-compatible ones only
when they are OpenAI itself (api.openai.com): a local vLLM serving a model it calls `gpt-4o`
has no vendor price.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from decimal import Decimal
from importlib import resources
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field

from gateway.accounting.pricing import Price
from gateway.config.backends_schema import AnthropicBackend, AzureOpenAIBackend, OpenAIBackend
from gateway.config.schema import Backend

Vendor = str  # "openai" | "anthropic" | "azure_openai"
# A vendor's dated snapshot of a model, or its moving alias: gpt-4o-2024-08-06, ...-20250929.
_SNAPSHOT = re.compile(r"-(\d{4}-\d{2}-\d{2}|\d{8}|latest)$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Entry(_Strict):
    input: Decimal = Field(ge=0)
    output: Decimal = Field(ge=0)
    cached_input: Decimal | None = Field(None, ge=0)
    cache_write: Decimal | None = Field(None, ge=0)
    batch_discount: Decimal | None = Field(None, ge=0, lt=1)
    source: str | None = None
    as_of: str | None = None


class _Vendor(_Strict):
    source: str
    as_of: str
    batch_discount: Decimal | None = Field(None, ge=0, lt=1)
    models: dict[str, _Entry]


@dataclass(frozen=True, slots=True)
class CatalogPrice:
    """One catalog entry as it applies: the price, the vendor's batch discount, and where the
    figure comes from (shown by `tollgate prices`)."""

    vendor: Vendor
    model: str  # the catalog's name for it (a snapshot matches its base name)
    price: Price
    batch_discount: Decimal | None
    source: str
    as_of: str


@dataclass(frozen=True, slots=True)
class Catalog:
    vendors: dict[Vendor, dict[str, CatalogPrice]]

    def lookup(self, vendor: Vendor, model: str) -> CatalogPrice | None:
        models = self.vendors.get(vendor, {})
        found = models.get(model)
        if found is None:
            base = _SNAPSHOT.sub("", model)
            found = models.get(base) if base != model else None
        return found

    def __len__(self) -> int:
        return sum(len(m) for m in self.vendors.values())


def parse_catalog(text: str) -> Catalog:
    """The catalog from its YAML (validated: a bad shipped file fails every test at once)."""
    raw = yaml.safe_load(text)
    vendors: dict[Vendor, dict[str, CatalogPrice]] = {}
    for name, block in raw.items():
        vendor = _Vendor.model_validate(block)
        entries = {}
        for model, e in vendor.models.items():
            source = e.source or vendor.source
            as_of = e.as_of or vendor.as_of
            cached = e.cached_input if e.cached_input is not None else e.input
            write = e.cache_write if e.cache_write is not None else e.input
            label = f"catalog: {name} {model} ({source}, {as_of})"
            price = Price(e.input, e.output, cached, write, label)
            discount = e.batch_discount if e.batch_discount is not None else vendor.batch_discount
            entries[model] = CatalogPrice(name, model, price, discount, source, as_of)
        vendors[name] = entries
    return Catalog(vendors)


@functools.cache
def builtin_catalog() -> Catalog:
    """Read once per process: the file ships with the package and never changes under it."""
    text = resources.files("gateway.config").joinpath("data/price_catalog.yaml").read_text()
    return parse_catalog(text)


def vendor_of(backend: Backend) -> Vendor | None:
    """Which vendor's list prices apply to a backend, if any."""
    if isinstance(backend, AnthropicBackend):
        return "anthropic"
    if isinstance(backend, AzureOpenAIBackend):
        return "azure_openai"
    if isinstance(backend, OpenAIBackend):
        host = urlsplit(backend.base_url).hostname or ""
        return "openai" if host == "api.openai.com" else None
    return None
