"""Tenants as upstreams see them: a stable opaque key per org, team or key, and what a call
asks of a vendor's prompt cache on its tenant's behalf."""

from __future__ import annotations

from dataclasses import dataclass

import xxhash


def tenant_key(name: str, team: str | None, org: str | None, by: str) -> str:
    """The caller's tenant by its org, team or key name (`by`), falling back to the narrower
    one when the wider is not set. Derived, not secret: used where upstreams keep tenants
    apart (KV-cache salts, prompt-cache keys) and never taken from the client."""
    if by == "org" and org:
        namespace = "org:" + org
    elif by in ("team", "org") and team:
        namespace = "team:" + team
    else:
        namespace = "key:" + name
    return "tollgate-" + xxhash.xxh3_128_hexdigest(namespace.encode())


@dataclass(frozen=True, slots=True)
class PromptCacheAsk:
    """Breakpoints on prefixes of at least `min_tokens` (Anthropic); `key` as OpenAI's
    `prompt_cache_key` (the tenant's, hashed)."""

    min_tokens: int
    key: str
