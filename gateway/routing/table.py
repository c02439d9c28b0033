"""The routing table a config describes, resolved once per runtime (by the composition root,
gateway/runtime.py): every alias's tiers of replicas, its default tier, its reference, its
fallbacks and how its calls are retried."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from gateway.call import Target


@dataclass(frozen=True, slots=True)
class Replica:
    """One backend serving a tier's model: what a call is sent to."""

    backend: str
    model: str
    tier: str
    weight: float = 1.0
    # Made once (a call's record points at it), not per call.
    target: Target = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "target", Target(self.backend, self.model, self.tier))

    @property
    def key(self) -> tuple[str, str]:
        """Its live state's key: the same backend and model keep their state across reloads."""
        return self.backend, self.model


@dataclass(frozen=True, slots=True)
class Tier:
    name: str
    replicas: tuple[Replica, ...]
    strategy: str


@dataclass(frozen=True, slots=True)
class Step:
    """One (alias, tier) a plan may try, in order: the intended one, then the fallbacks."""

    alias: str
    tier: Tier
    why: str


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Attempts per call across its plan (the first try included) and the back-off between."""

    attempts: int = 3
    backoff_ms: float = 50.0
    max_backoff_ms: float = 2000.0


@dataclass(frozen=True, slots=True)
class AliasRoute:
    name: str
    tiers: Mapping[str, Tier]
    default_tier: str
    reference: Target | str  # a tier's name, or an explicit backend/model
    fallbacks: tuple[tuple[str, str], ...]  # ("tier", name) | ("alias", name)
    retry: RetryPolicy
    # Whose calls share KV blocks: team | key | org | shared (also when nothing the alias
    # routes to takes a salt or routes by prefix: then no call works one out).
    kv_isolation: str = "team"

    def targets(self) -> tuple[Target, ...]:
        return tuple(r.target for tier in self.tiers.values() for r in tier.replicas)
