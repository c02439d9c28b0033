"""The money sections of tollgate.yaml: pricing, budgets, rate limits, their store, keys, admin."""

from __future__ import annotations

from decimal import Decimal
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from gateway.accounting.pricing import nanos_of_usd
from gateway.budget_rules import BudgetRule, BudgetWindow, Scope
from gateway.config.alerts_schema import AlertsConfig, Percent, thresholds


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


Money = Decimal  # JSON numbers or strings ("0.15"), kept exact


class PriceConfig(_Strict):
    """USD per 1M tokens for a (backend, upstream model, tier); `*` matches any. Either explicit
    prices, a GPU-hour derivation for local tiers, or `free: true` (never implied)."""

    backend: str = "*"
    model: str = "*"
    tier: str = "*"
    input: Money | None = Field(None, ge=0)
    output: Money | None = Field(None, ge=0)
    cached_input: Money | None = Field(None, ge=0)
    cache_write: Money | None = Field(None, ge=0)
    gpu_hour_usd: Money | None = Field(None, ge=0)
    prefill_tokens_per_s: Money | None = Field(None, gt=0)
    decode_tokens_per_s: Money | None = Field(None, gt=0)
    free: bool = Field(False, strict=True)

    model_config = ConfigDict(strict=False, extra="forbid", frozen=True)

    @model_validator(mode="after")
    def _one_way(self) -> PriceConfig:
        explicit = self.input is not None or self.output is not None
        derived = self.gpu_hour_usd is not None
        if sum((explicit, derived, self.free)) != 1:
            raise ValueError(
                "give exactly one of: input and output prices, gpu_hour_usd (with "
                "prefill_tokens_per_s and decode_tokens_per_s), or free: true"
            )
        if explicit and (self.input is None or self.output is None):
            raise ValueError("set both input and output (USD per 1M tokens)")
        if derived and (self.prefill_tokens_per_s is None or self.decode_tokens_per_s is None):
            raise ValueError("gpu_hour_usd needs prefill_tokens_per_s and decode_tokens_per_s")
        return self


class BudgetConfig(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    scope: Scope
    subject: str | None = None
    usd: Money | None = Field(None, ge=0)
    tokens: int | None = Field(None, ge=0, strict=True)
    window: BudgetWindow = "month"
    enforcement: Literal["hard", "soft"] = "hard"
    # Percentages of the limit that alert once per window (limits.alerts.webhooks), and to
    # which webhooks (default: all of them).
    alert_at: tuple[Percent, ...] | None = None
    notify: tuple[str, ...] | None = None

    model_config = ConfigDict(strict=False, extra="forbid", frozen=True)

    @field_validator("alert_at")
    @classmethod
    def _thresholds(cls, value: tuple[Percent, ...] | None) -> tuple[Percent, ...] | None:
        return thresholds(value) if value is not None else None

    @model_validator(mode="after")
    def _consistent(self) -> BudgetConfig:
        if self.usd is None and self.tokens is None:
            raise ValueError("set usd and/or tokens")
        if (self.scope == "global") != (self.subject is None):
            raise ValueError("`subject` is required except for scope global (use '*' for each)")
        return self

    def rule(self, source: str) -> BudgetRule:
        """The budget as the ledger uses it (the same for YAML and run-time budgets)."""
        return BudgetRule(
            name=self.name,
            scope=self.scope,
            subject=self.subject,
            usd_nanos=nanos_of_usd(self.usd) if self.usd is not None else None,
            tokens=self.tokens,
            window=self.window,
            enforcement=self.enforcement,
            source=source,
            alert_at=self.alert_at,
            notify=self.notify,
        )


class RateLimitConfig(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    scope: Literal["global", "org", "team", "user", "key", "model"]
    subject: str | None = None
    model: str | None = None
    rpm: int | None = Field(None, ge=1)
    tpm: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _consistent(self) -> RateLimitConfig:
        if self.rpm is None and self.tpm is None:
            raise ValueError("set rpm and/or tpm")
        if (self.scope == "global") != (self.subject is None):
            raise ValueError("`subject` is required except for scope global (use '*' for each)")
        return self


class LimitsConfig(_Strict):
    """Where budget and rate-limit counters live and what a store outage means."""

    store: Literal["memory", "redis"] = "memory"
    redis_url: str = "redis://127.0.0.1:6379/0"
    # A Redis Cluster: redis_url is any node (a seed); the others are discovered.
    redis_cluster: bool = False
    key_prefix: str = Field("tollgate", pattern=r"^[A-Za-z0-9_.:-]+$")
    store_timeout_ms: int = Field(250, ge=1)
    redis_max_connections: int = Field(64, ge=1)
    on_store_failure: Literal["closed", "open"] = "closed"
    timezone: str = "UTC"
    budget_status: Literal[402, 429] = 429
    default_max_tokens: int = Field(4096, ge=1)
    # Reserve the prompt estimate plus this fraction: backends apply chat templates and their
    # own tokenizers, so they usually report a few more prompt tokens than tiktoken counts.
    prompt_margin: float = Field(0.1, ge=0, le=10)
    # What a target's chat template adds to a prompt, reserved until the target has reported
    # usage (then learnt from it, per target: accounting/overhead.py).
    prompt_overhead_tokens: int = Field(32, ge=0, le=100_000)
    # A reservation in Redis whose gateway died before settling it is released after this
    # long by any other gateway (keep it above the longest backend `timeouts.total`).
    hold_seconds: float = Field(900.0, ge=1)
    budgets: tuple[BudgetConfig, ...] = ()
    rate_limits: tuple[RateLimitConfig, ...] = ()
    alerts: AlertsConfig = AlertsConfig()

    def budget_rules(self) -> tuple[BudgetRule, ...]:
        """The budgets declared in YAML, as the ledger uses them."""
        return tuple(b.rule("yaml") for b in self.budgets)

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value


class DatabaseConfig(_Strict):
    """SQL for keys and budgets: SQLite file (embedded) or PostgreSQL (shared by a fleet).
    TOLLGATE_DATABASE_URL overrides `url`."""

    url: str = "sqlite:///.tollgate/tollgate.db"
    auto_upgrade: bool | None = None  # None: only for SQLite
    # Connections each gateway process keeps open, and how many more a burst may open: a
    # fleet's total (pods x workers x (pool_size + max_overflow), plus one per audit worker)
    # must fit under PostgreSQL's max_connections (docs/deploy.md "Connection budget").
    pool_size: int = Field(5, ge=1, le=1000)
    max_overflow: int = Field(10, ge=0, le=1000)


class KeysConfig(_Strict):
    """Virtual keys: the HMAC secret comes from `secret_env` (shared by the fleet); without it
    a per-machine secret is generated under .tollgate/ (fine for one process)."""

    secret_env: str = "TOLLGATE_SECRET"
    refresh_seconds: float = Field(1.0, gt=0)


class AdminConfig(_Strict):
    """The /admin API; its key comes from `key_env` (default TOLLGATE_ADMIN_KEY)."""

    key_env: str = "TOLLGATE_ADMIN_KEY"
