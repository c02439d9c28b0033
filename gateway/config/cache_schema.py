"""The response cache's settings: where entries live (`cache:` at the top of tollgate.yaml)
and, per model alias, what is cached for whom (`models.<alias>.cache`). docs/caching.md"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

CacheMode = Literal["off", "exact", "semantic"]
Namespace = Literal["team", "key", "org", "global"]


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class VerifyConfig(_Strict):
    """Sampled checks of semantic hits: `sample` of them are also sent upstream, after the
    client has its answer, and the two answers compared (`compare`, the quality guard's
    comparators; `similarity` for the embedding comparator). Over the last `window` checks
    (at least `min_samples`), a false-hit rate above `max_false_rate` raises the namespace's
    threshold by `step`; past `max_threshold` its semantic cache is switched off."""

    sample: float = Field(0.05, ge=0, le=1)
    compare: str = "auto"
    similarity: float = Field(0.9, gt=0, le=1)
    max_false_rate: float = Field(0.05, ge=0, le=1)
    window: int = Field(100, ge=1, le=100_000)
    min_samples: int = Field(20, ge=1, le=100_000)
    step: float = Field(0.02, gt=0, le=0.5)
    max_threshold: float = Field(0.995, gt=0, le=1)


class SemanticConfig(_Strict):
    """Answers to a paraphrase: the last user turn's embedding (from `embedding_model`, an alias
    served by Tollgate's own backends) within `threshold` cosine similarity of an answered
    one's, with everything else about the request equal (docs/caching.md, "Semantic")."""

    embedding_model: str
    threshold: float = Field(0.9, gt=0, le=1)
    verify: VerifyConfig = VerifyConfig()
    # The last user turn longer than this is not compared (a long document is not a question
    # whose paraphrase is safe to answer).
    max_chars: int = Field(2000, ge=1, le=100_000)


class AliasCache(_Strict):
    """What an alias caches. `namespace`: whose entries a call may hit (its team's by default;
    the key's, the org's, or everyone's only when written here). Only deterministic requests
    (temperature 0 or a seed) unless `nondeterministic`. Entries live `ttl_seconds`, at most
    `max_entries` per namespace, none larger than `max_entry_bytes`."""

    mode: CacheMode = "exact"
    namespace: Namespace = "team"
    nondeterministic: bool = False
    ttl_seconds: float = Field(86_400.0, gt=0, le=365 * 86_400)
    max_entries: int = Field(100_000, ge=1, le=100_000_000)
    max_entry_bytes: int = Field(1_048_576, ge=256, le=64 * 1_048_576)
    semantic: SemanticConfig | None = None

    @model_validator(mode="after")
    def _semantic_needs_a_model(self) -> AliasCache:
        if self.mode == "semantic" and self.semantic is None:
            raise ValueError("mode semantic needs semantic: {embedding_model: ALIAS}")
        return self


class CacheStoreConfig(_Strict):
    """Where entries live: in this process (`memory`, the embedded default) or in Redis, shared
    by a fleet, with an in-process L1 of `l1_entries` in front. A store that fails or takes
    longer than `timeout_ms` is a miss, never an error. Semantic entries reach the other
    gateways' vector indexes within `sync_seconds`."""

    store: Literal["memory", "redis"] = "memory"
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_cluster: bool = False
    key_prefix: str = "tollgate:cache:"
    timeout_ms: int = Field(50, ge=1, le=60_000)
    l1_entries: int = Field(10_000, ge=0, le=10_000_000)
    sync_seconds: float = Field(0.5, gt=0, le=3600)
