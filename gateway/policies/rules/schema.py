"""The `rules` policy's options: ordered rules, each conditions (`match`) and `actions`, as ops
write them in policy files (docs/policies.md). Validated once at load; names of tiers, aliases
and budgets are checked against the rest of the config there too (`references`)."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from gateway.policies.base import PluginOptions

Day = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
DAYS: tuple[Day, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
OneOrMore = str | tuple[str, ...]
_HOURS = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-4]):([0-5]\d)$")


class Range(PluginOptions):
    """Inclusive bounds; either may be left out."""

    min: int | None = Field(None, ge=0)
    max: int | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _ordered(self) -> Range:
        if self.min is None and self.max is None:
            raise ValueError("give min, max or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) is above max ({self.max})")
        return self


class TimeWindow(PluginOptions):
    """Days of the week and a span of hours (`22:00-06:00` wraps midnight) in the limits'
    time zone (`limits.timezone`)."""

    days: tuple[Day, ...] = DAYS
    hours: str = "00:00-24:00"

    @field_validator("hours")
    @classmethod
    def _hours(cls, value: str) -> str:
        if not _HOURS.match(value):
            raise ValueError("hours must be HH:MM-HH:MM (24-hour clock), e.g. 22:00-06:00")
        return value

    def span(self) -> tuple[int, int]:
        """(start, end) in minutes of the day."""
        found = _HOURS.match(self.hours)
        assert found is not None
        h1, m1, h2, m2 = (int(g) for g in found.groups())
        return h1 * 60 + m1, h2 * 60 + m2


class BudgetCondition(PluginOptions):
    """Holds when the caller's counter of budget `name` has used at least this fraction of its
    limit in its current window (dollars if the budget has them, else tokens)."""

    name: str
    used_at_least: float = Field(ge=0, le=100, strict=False)


class Match(PluginOptions):
    """Every condition given must hold; an empty match holds for every call."""

    model: OneOrMore | None = None
    key: OneOrMore | None = None
    user: OneOrMore | None = None
    team: OneOrMore | None = None
    org: OneOrMore | None = None
    tags: tuple[str, ...] | None = None  # any of them
    headers: dict[str, str] | None = None  # value "*": present with any value
    endpoint: OneOrMore | None = None
    stream: bool | None = None
    prompt_tokens: Range | None = None  # estimated
    max_tokens: Range | None = None  # as requested
    tools: bool | None = None  # tools or functions present
    json_mode: bool | None = None  # response_format json_object / json_schema
    time: TimeWindow | None = None
    budget: BudgetCondition | None = None
    soft_exceeded: bool | None = None  # a soft budget passed (the budgets policy ran first)


class RouteAction(PluginOptions):
    """Serve from this tier (of the call's alias, or of `alias`), or from `alias`'s default."""

    tier: str | None = None
    alias: str | None = None

    @model_validator(mode="after")
    def _something(self) -> RouteAction:
        if self.tier is None and self.alias is None:
            raise ValueError("give a tier, an alias or both")
        return self


class MaxTokensAction(PluginOptions):
    """`cap`: lower a larger ask to it; `set`: use it whatever was asked."""

    cap: int | None = Field(None, ge=1)
    set: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _one(self) -> MaxTokensAction:
        if (self.cap is None) == (self.set is None):
            raise ValueError("give exactly one of cap or set")
        return self


class DenyAction(PluginOptions):
    message: str = Field(min_length=1, max_length=2000)
    status: int = Field(403, ge=400, le=599)


class PromptCacheAction(PluginOptions):
    """Use the vendor's prompt cache: Anthropic `cache_control` breakpoints on stable
    prefixes of at least `min_tokens` (1024 for most models, 2048 for Haiku); OpenAI's
    `prompt_cache_key` set to the tenant (`key`: team, key or org). backends/prompt_cache.py"""

    min_tokens: int = Field(1024, ge=1, le=1_000_000)
    key: Literal["team", "key", "org"] = "team"


class DeferAction(PluginOptions):
    """The call can wait: it waits for spare capacity (up to `max_wait_seconds`), then is served
    normally (docs/batch.md, "Flex calls")."""

    max_wait_seconds: float = Field(ge=0, le=3600, strict=False)


# The call label a rule's `cache` action sets; the cache stage reads it (gateway/cache).
CACHE_LABEL = "cache.mode"


class Actions(PluginOptions):
    route: RouteAction | None = None
    # The response cache's mode for the call (off, exact, semantic): docs/caching.md
    cache: Literal["off", "exact", "semantic"] | None = None
    max_tokens: MaxTokensAction | None = None
    deny: DenyAction | None = None
    prompt_cache: PromptCacheAction | None = None
    defer: DeferAction | None = None  # wait for spare capacity (a flex call)
    tags: tuple[str, ...] = ()  # added to the call's labels (`rule.tags`), for sinks
    labels: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _something(self) -> Actions:
        acts = (self.route, self.max_tokens, self.deny, self.prompt_cache, self.cache,
                self.defer, self.tags, self.labels)  # fmt: skip
        if not any(acts):
            raise ValueError("a rule needs at least one action")
        return self


class QualityGuard(PluginOptions):
    """Checks on evidence that a rule's cheaper route keeps answers good: a `sample` of the
    calls it routes is also sent, off the request path, to the `reference` tier (the alias's
    reference by default), charged to the ops `budget`; the two answers are compared, and when
    fewer than `min_agreement` of the last `window` comparisons agree (after `min_samples`),
    the rule is suspended: its route no longer applies until ops resume it."""

    sample: float = Field(gt=0, le=1, strict=False)
    compare: str = "auto"  # auto | exact | text | embedding | a `tollgate.comparators` plugin
    min_agreement: float = Field(ge=0, le=1, strict=False)
    min_samples: int = Field(50, ge=1, le=100_000)
    window: int = Field(200, ge=1, le=100_000)
    budget: str
    reference: str | None = None  # a tier of the routed alias
    embedding_model: str | None = None  # an alias serving embeddings, for `embedding`
    similarity: float = Field(0.9, ge=0, le=1, strict=False)  # cosine, for `embedding`

    @model_validator(mode="after")
    def _window(self) -> QualityGuard:
        if self.window < self.min_samples:
            raise ValueError(f"window ({self.window}) must hold min_samples ({self.min_samples})")
        return self


class Rule(PluginOptions):
    name: str = Field(min_length=1, max_length=100)
    match: Match = Match()
    actions: Actions
    mode: Literal["enforce", "shadow"] = "enforce"
    stop: bool = False  # no later rule is evaluated once this one matched
    quality_guard: QualityGuard | None = None

    @model_validator(mode="after")
    def _guarded_route(self) -> Rule:
        if self.quality_guard is not None and self.actions.route is None:
            raise ValueError("a quality_guard watches a route: this rule has none")
        return self


class RulesOptions(PluginOptions):
    # Not `min_length`: pydantic would add a length error to every broken rule's own errors.
    rules: tuple[Rule, ...]

    @model_validator(mode="after")
    def _unique(self) -> RulesOptions:
        if not self.rules:
            raise ValueError("give at least one rule")
        seen: set[str] = set()
        for rule in self.rules:
            if rule.name in seen:
                raise ValueError(f"rule name {rule.name!r} is used twice")
            seen.add(rule.name)
        return self
