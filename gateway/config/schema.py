"""The shape of tollgate.yaml: strict, frozen pydantic models and nothing else.

Validation runs in pydantic's JSON mode so YAML lists become tuples while types stay strict
(a quoted "5" is not an int, unknown keys are errors).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from gateway.config.accounting_schema import (
    AdminConfig,
    BudgetConfig,
    DatabaseConfig,
    KeysConfig,
    LimitsConfig,
    PriceConfig,
    RateLimitConfig,
)
from gateway.config.audit_schema import AuditConfig
from gateway.config.backends_schema import (
    AnthropicBackend,
    AzureOpenAIBackend,
    Backend,
    ConnectionLimits,
    HealthCheck,
    LoadMetrics,
    NetworkBackend,
    OpenAIBackend,
    SimBackend,
    Timeouts,
)
from gateway.config.batch_schema import BatchConfig
from gateway.config.cache_schema import CacheStoreConfig
from gateway.config.models_schema import ModelConfig
from gateway.config.telemetry_schema import TelemetryConfig


class Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


__all__ = [
    "AnthropicBackend",
    "AzureOpenAIBackend",
    "Backend",
    "Config",
    "ConnectionLimits",
    "HealthCheck",
    "LoadMetrics",
    "NetworkBackend",
    "OpenAIBackend",
    "SimBackend",
    "Timeouts",
]


class CircuitConfig(Strict):
    """When a replica is taken out of rotation (passive health): `failures` in a row, or an
    error rate of `error_rate` over its last `window` calls (at least `min_calls` of them).
    It stays out for `cooldown_seconds` (or the upstream's retry-after), doubling while its
    half-open probe keeps failing, up to `max_cooldown_seconds`."""

    failures: int = Field(5, ge=1, le=1000)
    error_rate: float = Field(0.5, gt=0, le=1)
    window: int = Field(20, ge=1, le=10_000)
    min_calls: int = Field(10, ge=1, le=10_000)
    cooldown_seconds: float = Field(10.0, gt=0, le=3600)
    max_cooldown_seconds: float = Field(120.0, gt=0, le=86_400)


class PrefixAwareConfig(Strict):
    """The `prefix_aware` strategy's settings (docs/routing.md gives each default's source):
    prompt blocks from `block_bytes` of text; the replica holding the longest prefix wins if
    it holds at least `min_match_tokens` and `min_match_ratio` of the prompt and its load is
    within `load_window` calls of the least-loaded replica's (a prompt nobody holds: see
    docs/routing.md); when loads differ by more than
    `balance_abs` calls and `balance_rel` times, the least-loaded wins. A replica's index is
    sized from its KV capacity: the engine's report, its backend's `kv_capacity_tokens`, else
    `kv_capacity_tokens` here."""

    block_bytes: int = Field(2048, ge=64, le=1_048_576)
    min_match_tokens: int = Field(256, ge=0, le=10_000_000)
    min_match_ratio: float = Field(0.3, ge=0, le=1)
    load_window: float = Field(8.0, ge=0, le=100_000)
    balance_abs: float = Field(64.0, ge=0, le=1_000_000)
    balance_rel: float = Field(1.5, ge=1, le=1000)
    kv_capacity_tokens: int = Field(450_000, ge=1, le=10_000_000_000)
    # A fleet's gateways share their indexes through Redis (routing/prefix_feed.py); without
    # it each routes on its own index and rendezvous hashing. A change applies at restart.
    share: PrefixShareConfig | None = None


class PrefixShareConfig(Strict):
    """Where a fleet's gateways tell each other what they routed: one Redis stream, read and
    written every `sync_ms`, keeping about `retain` entries for gateways that start."""

    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_cluster: bool = False
    key_prefix: str = "tollgate:"
    sync_ms: float = Field(50.0, gt=0, le=60_000)
    timeout_ms: float = Field(500.0, gt=0, le=60_000)
    retain: int = Field(200_000, ge=1000, le=100_000_000)


class RoutingConfig(Strict):
    circuit: CircuitConfig = CircuitConfig()
    prefix_aware: PrefixAwareConfig = PrefixAwareConfig()


class PolicyConfig(Strict):
    """One entry of the ordered policy chain; `with` is validated by the plugin's own model."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True, populate_by_name=True)

    use: str
    mode: Literal["enforce", "shadow"] = "enforce"
    options: dict[str, Any] = Field(default_factory=dict, alias="with")


class StaticKey(Strict):
    """A client key until virtual keys land; the secret comes from the environment or a hash."""

    name: str
    key_env: str | None = None
    key_sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")
    user: str | None = None
    team: str | None = None
    org: str | None = None
    tags: tuple[str, ...] = ()
    models: tuple[str, ...] | None = None

    @model_validator(mode="after")
    def _one_secret_source(self) -> StaticKey:
        if (self.key_env is None) == (self.key_sha256 is None):
            raise ValueError("set exactly one of key_env or key_sha256")
        return self


class AuthConfig(Strict):
    """`open` accepts any bearer key; only allowed when every backend is simulated."""

    mode: Literal["keys", "open"] = "keys"
    keys: tuple[StaticKey, ...] = ()


class ServerConfig(Strict):
    max_body_bytes: int = Field(10 * 1024 * 1024, ge=1024)
    reload_poll_seconds: float = Field(2.0, ge=0)
    sink_queue_size: int = Field(10_000, ge=1)
    # A client must send its request headers within this long of connecting (or of its last
    # response), and each part of its body within body_timeout_seconds of the previous one.
    header_timeout_seconds: float = Field(10.0, gt=0, le=600)
    body_timeout_seconds: float = Field(30.0, gt=0, le=3600)
    keepalive_seconds: float = Field(5.0, gt=0, le=3600)
    # Proxies (IPs or CIDRs) whose X-Forwarded-For names the client; from anyone else it is
    # ignored, so no client can choose the client_ip the audit log records.
    trusted_proxies: tuple[str, ...] = ()
    # Completions one request may ask for (n, best_of x prompts): a bound on what one call
    # can make a backend generate.
    max_completions: int = Field(128, ge=1, le=10_000)


class ResponsesConfig(Strict):
    """The Responses API's stored responses (docs/responses.md): kept per key for
    `retention_days` unless the request says `store: false`; `store: false` here keeps none
    (then `previous_response_id` is refused)."""

    store: bool = True
    retention_days: float = Field(30.0, gt=0, le=3650)


class LoggingConfig(Strict):
    json_lines: bool = Field(False, alias="json")
    level: Literal["debug", "info", "warning", "error"] = "info"
    requests: bool = True

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True, populate_by_name=True)


class Config(Strict):
    version: Literal[1] = 1
    server: ServerConfig = ServerConfig()
    logging: LoggingConfig = LoggingConfig()
    auth: AuthConfig = AuthConfig()
    backends: dict[str, Backend] = Field(default_factory=dict)
    models: dict[str, ModelConfig] = Field(default_factory=dict)
    routing: RoutingConfig = RoutingConfig()
    cache: CacheStoreConfig = CacheStoreConfig()
    policy_files: tuple[str, ...] = ()
    policies: tuple[PolicyConfig, ...] = ()
    pricing: tuple[PriceConfig, ...] = ()
    limits: LimitsConfig = LimitsConfig()
    database: DatabaseConfig = DatabaseConfig()
    keys: KeysConfig = KeysConfig()
    admin: AdminConfig = AdminConfig()
    audit: AuditConfig = AuditConfig()
    telemetry: TelemetryConfig = TelemetryConfig()
    responses: ResponsesConfig = ResponsesConfig()
    batch: BatchConfig = BatchConfig()


class PolicyFile(Strict):
    """A file under policies/: an ordered list appended to the main chain, and budgets and rate
    limits added to the main file's `limits` (names must be unique across all files)."""

    policies: tuple[PolicyConfig, ...] = ()
    budgets: tuple[BudgetConfig, ...] = ()
    rate_limits: tuple[RateLimitConfig, ...] = ()
