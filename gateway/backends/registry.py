"""Backends built by type: each `type:` of `backends:` names a kind that declares what it can
do (its dialect and capabilities) and builds its adapter from its own typed settings. The
composition root (gateway/runtime.py) asks here; nothing else looks at a backend's class.

A new backend type is one entry in KINDS: its settings model (settings.py), its adapter, and
its capabilities; the conformance suite (tests/unit/backends/test_conformance.py) runs against
every entry.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from gateway.accounting.tokens import TokenCounter
from gateway.backends.anthropic import ANTHROPIC_CAPABILITIES
from gateway.backends.anthropic import AnthropicBackend as AnthropicAdapter
from gateway.backends.base import Backend, Capabilities
from gateway.backends.openai_compat import OpenAICompatBackend
from gateway.backends.sim import SimBackend as SimAdapter
from gateway.config.backends_schema import (
    AnthropicBackend,
    AzureOpenAIBackend,
    OpenAIBackend,
    SimBackend,
    Timeouts,
    coalescing,
)

# Headers whose values are credentials (kept out of everything clients see, logs, records).
_SECRET_HEADERS = frozenset({"authorization", "api-key", "x-api-key", "proxy-authorization"})


@dataclass(frozen=True, slots=True)
class BuildContext:
    """What every backend is built with: the one shared transport, the token counter, and
    the environment its secrets are read from."""

    transport: httpx.AsyncBaseTransport
    tokens: TokenCounter
    env: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class BackendKind:
    """One `type:`: what its backends can do, and how one is built from its settings."""

    type: str
    capabilities: Capabilities
    build: Callable[[str, Any, BuildContext], Backend]
    # A simulated backend is never a real upstream: open access is allowed, no secrets.
    simulated: bool = False


OPENAI = Capabilities(
    dialect="openai", streaming_usage=True, embeddings=True, completions=True, batch=False,
    count_tokens=False, load_metrics=True,
)  # fmt: skip
ANTHROPIC = ANTHROPIC_CAPABILITIES
AZURE = Capabilities(
    dialect="openai", streaming_usage=True, embeddings=True, completions=True, batch=False,
    count_tokens=False, load_metrics=False,
)  # fmt: skip
SIM = Capabilities(
    dialect="openai", streaming_usage=True, embeddings=True, completions=True, batch=False,
    count_tokens=False, load_metrics=True, local=True, cache_salt=True,
)  # fmt: skip


def _timeout(t: Timeouts) -> httpx.Timeout:
    return httpx.Timeout(connect=t.connect, read=t.read, write=t.read, pool=t.connect)


def _api_key(settings: OpenAIBackend | AnthropicBackend | AzureOpenAIBackend,
             ctx: BuildContext) -> str | None:  # fmt: skip
    return ctx.env.get(settings.api_key_env) if settings.api_key_env else None


def _openai(name: str, s: OpenAIBackend, ctx: BuildContext) -> Backend:
    return OpenAICompatBackend(
        name, transport=ctx.transport, base_url=s.base_url, tokens=ctx.tokens,
        api_key=_api_key(s, ctx), headers=s.headers, timeout=_timeout(s.timeouts),
        total_timeout=s.timeouts.total, max_connections=s.limits.max_connections,
        capabilities=_openai_capabilities(s),
        coalesce=coalescing(s.coalesce_embeddings, not _vendor(s.base_url)),
    )  # fmt: skip


def _openai_capabilities(s: OpenAIBackend) -> Capabilities:
    """What this OpenAI-compatible server takes beyond the API every one of them serves."""
    vendor = _vendor(s.base_url)
    keyed = vendor if s.prompt_cache_key is None else s.prompt_cache_key
    responses = vendor if s.responses is None else s.responses
    return dataclasses.replace(
        OPENAI, cache_salt=s.cache_salt, prompt_cache_key=keyed, responses=responses
    )


def _vendor(base_url: str) -> bool:
    return urlsplit(base_url).hostname == "api.openai.com"


def _anthropic(name: str, s: AnthropicBackend, ctx: BuildContext) -> Backend:
    return AnthropicAdapter(
        name, transport=ctx.transport, base_url=s.base_url, tokens=ctx.tokens,
        api_key=_api_key(s, ctx), version=s.version, headers=s.headers,
        timeout=_timeout(s.timeouts), total_timeout=s.timeouts.total,
        max_connections=s.limits.max_connections,
    )  # fmt: skip


def _azure(name: str, s: AzureOpenAIBackend, ctx: BuildContext) -> Backend:
    api_key = _api_key(s, ctx)
    return OpenAICompatBackend(
        name, transport=ctx.transport, base_url=s.endpoint, tokens=ctx.tokens,
        headers={**s.headers, **({"api-key": api_key} if api_key else {})},
        timeout=_timeout(s.timeouts), total_timeout=s.timeouts.total,
        max_connections=s.limits.max_connections, url_for=azure_urls(s), capabilities=AZURE,
        coalesce=coalescing(s.coalesce_embeddings, local=False),
    )  # fmt: skip


def _sim(name: str, s: SimBackend, ctx: BuildContext) -> Backend:
    return SimAdapter(
        name, s, tokens=ctx.tokens, timeout=_timeout(s.timeouts), total_timeout=s.timeouts.total,
        capabilities=capabilities_of(s), coalesce=coalescing(s.coalesce_embeddings, local=True),
    )  # fmt: skip


def azure_urls(settings: AzureOpenAIBackend) -> Callable[[str, str], str]:
    """`{endpoint}/openai/deployments/{deployment}/{path}?api-version=...` per call."""

    def url_for(endpoint: str, model: str) -> str:
        deployment = settings.deployments.get(model, model)
        path = endpoint.replace(".", "/")  # chat.completions -> chat/completions
        return (
            f"{settings.endpoint}/openai/deployments/{deployment}/{path}"
            f"?api-version={settings.api_version}"
        )

    return url_for


KINDS: Mapping[str, BackendKind] = {
    "openai": BackendKind("openai", OPENAI, _openai),
    "anthropic": BackendKind("anthropic", ANTHROPIC, _anthropic),
    "azure_openai": BackendKind("azure_openai", AZURE, _azure),
    "sim": BackendKind("sim", SIM, _sim, simulated=True),
}

Settings = OpenAIBackend | AnthropicBackend | AzureOpenAIBackend | SimBackend


def kind_of(settings: Settings) -> BackendKind:
    return KINDS[settings.type]


def capabilities_of(settings: Settings) -> Capabilities:
    """What a backend with these settings can do (its kind's, and its own switches)."""
    if isinstance(settings, OpenAIBackend):
        return _openai_capabilities(settings)
    if isinstance(settings, SimBackend):
        return dataclasses.replace(SIM, responses=settings.responses)
    return kind_of(settings).capabilities


def build_backend(name: str, settings: Settings, ctx: BuildContext) -> Backend:
    return kind_of(settings).build(name, settings, ctx)


def secrets_of(settings: Settings, env: Mapping[str, str]) -> list[str]:
    """The credentials a backend sends upstream (its key, secret-bearing headers)."""
    if isinstance(settings, SimBackend):
        return []
    out = (
        [env[settings.api_key_env]]
        if settings.api_key_env and env.get(settings.api_key_env)
        else []
    )
    out.extend(v for k, v in settings.headers.items() if k.lower() in _SECRET_HEADERS)
    return out
