"""The `models:` section: each alias clients call, its named tiers of replicas, the tier it
serves from by default, the reference its savings are measured against, and where it falls
back to (docs/routing.md).

    models:
      chat:
        tiers:
          fp16: {replicas: [{backend: gpu-a, model: llama-fp16}, {backend: gpu-b, model: ...}]}
          int4: [{backend: gpu-c, model: llama-int4}]       # a tier may be just its replicas
        default_tier: fp16
        reference: fp16               # what a plain proxy would have used
        fallbacks: [int4, chat-vendor] # other tiers, then other aliases
      embed: {backend: gpu-a, model: bge-small}            # one backend: the short form
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from gateway.config.cache_schema import AliasCache

SHORT_TIER = "default"
_TARGETS_GONE = (
    "`targets` was replaced by tiers: write `backend: NAME` and `model: UPSTREAM` for one "
    "backend, or `tiers: {TIER: {replicas: [{backend: NAME, model: UPSTREAM}]}}` with "
    "`default_tier` and `reference` (docs/routing.md)"
)


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class ReplicaConfig(_Strict):
    """One backend serving the tier's model (its upstream name there), and its share of the
    tier's traffic for the `weighted` strategy."""

    backend: str
    model: str
    weight: float = Field(1.0, gt=0, le=1_000_000, strict=False)


class TierConfig(_Strict):
    replicas: tuple[ReplicaConfig, ...] = Field(min_length=1)
    strategy: str | None = None  # the alias's when unset


class FallbackConfig(_Strict):
    """Another tier of this alias, or another alias (served from its default tier)."""

    tier: str | None = None
    alias: str | None = None

    @model_validator(mode="after")
    def _one(self) -> FallbackConfig:
        if (self.tier is None) == (self.alias is None):
            raise ValueError("give exactly one of tier or alias")
        return self


class ReferenceConfig(_Strict):
    """A reference that is no tier of the alias: a backend and model a plain proxy would use."""

    backend: str
    model: str


class RetryConfig(_Strict):
    """Attempts per call across the plan (first try included), back-off between them."""

    attempts: int = Field(3, ge=1, le=20)
    backoff_ms: float = Field(50.0, ge=0, le=60_000)
    max_backoff_ms: float = Field(2000.0, ge=0, le=600_000)


class ModelConfig(_Strict):
    """A model alias clients use: one backend (short form) or named tiers of replicas."""

    backend: str | None = None
    model: str | None = None
    # A tier is its settings, or just its list of replicas.
    tiers: dict[str, TierConfig | tuple[ReplicaConfig, ...]] = Field(default_factory=dict)
    default_tier: str | None = None
    reference: str | ReferenceConfig | None = None
    fallbacks: tuple[str | FallbackConfig, ...] = ()
    strategy: str = "least_outstanding"
    retry: RetryConfig = RetryConfig()
    # Whose calls may reuse each other's KV cache on engines that take a per-request salt
    # (vLLM's `cache_salt`, the simulator): each team's (key's, org's) own, or everyone's
    # (`shared`: e.g. one long system prompt every tenant sends). docs/routing.md
    kv_isolation: Literal["team", "key", "org", "shared"] = "team"
    # The response cache for this alias (docs/caching.md); none when unset.
    cache: AliasCache | None = None
    owned_by: str = "tollgate"
    # The shape before tiers: accepted only to say what replaced it (a before-model validator
    # would make pydantic validate every other field as Python data, not JSON).
    targets: Any = Field(None, exclude=True)

    @field_validator("targets", mode="before")
    @classmethod
    def _no_targets(cls, value: Any) -> Any:
        raise ValueError(_TARGETS_GONE)

    @model_validator(mode="after")
    def _shape(self) -> ModelConfig:
        short = self.backend is not None or self.model is not None
        if short and self.tiers:
            raise ValueError("give either backend and model (one backend) or tiers, not both")
        if short and (self.backend is None or self.model is None):
            raise ValueError("the short form needs both backend and model")
        if not short and not self.tiers:
            raise ValueError("give backend and model (one backend), or tiers")
        if len(self.tiers) > 1 and self.default_tier is None:
            raise ValueError(
                f"default_tier is required with several tiers ({', '.join(self.tiers)}): "
                "which one serves a call no policy routes"
            )
        tiers = list(self.tiers) or [SHORT_TIER]
        for name in (self.default_tier, self.reference):
            if isinstance(name, str) and name not in tiers:
                raise ValueError(f"{name!r} is not a tier of this model ({', '.join(tiers)})")
        return self

    def resolved_tiers(self) -> dict[str, TierConfig]:
        """The tiers, the short form being one tier named `default`."""
        if self.tiers:
            return {
                name: tier if isinstance(tier, TierConfig) else TierConfig(replicas=tier)
                for name, tier in self.tiers.items()
            }
        assert self.backend is not None and self.model is not None
        replica = ReplicaConfig(backend=self.backend, model=self.model)
        return {SHORT_TIER: TierConfig(replicas=(replica,))}

    def first_tier(self) -> str:
        """The tier a call no policy routes is served from."""
        return self.default_tier or next(iter(self.resolved_tiers()))

    def reference_tier(self) -> str | ReferenceConfig:
        """What savings are measured against: `reference`, else the default tier (always an
        explicit choice, never the order tiers are written in)."""
        return self.reference if self.reference is not None else self.first_tier()

    def fallback_steps(self) -> list[FallbackConfig]:
        """Fallbacks as (tier | alias) steps; a bare name is a tier of this alias if it has
        one by that name, else another alias (the loader checks it exists)."""
        tiers = self.resolved_tiers()
        out = []
        for item in self.fallbacks:
            if isinstance(item, FallbackConfig):
                out.append(item)
            elif item in tiers:
                out.append(FallbackConfig(tier=item))
            else:
                out.append(FallbackConfig(alias=item))
        return out
