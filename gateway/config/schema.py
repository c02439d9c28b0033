"""The shape of tollgate.yaml: strict, frozen pydantic models and nothing else.

Validation runs in pydantic's JSON mode so YAML lists become tuples while types stay strict
(a quoted "5" is not an int, unknown keys are errors).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from gateway.audit.config import AuditConfig
from gateway.config.accounting_schema import (
    AdminConfig,
    BudgetConfig,
    DatabaseConfig,
    KeysConfig,
    LimitsConfig,
    PriceConfig,
    RateLimitConfig,
)
from gateway.sim.config import SimConfig
from gateway.telemetry.config import TelemetryConfig


class Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class Timeouts(Strict):
    """Seconds. `total` bounds a whole call, streams included."""

    connect: float = Field(5.0, gt=0)
    read: float = Field(120.0, gt=0)
    total: float = Field(600.0, gt=0)


class ConnectionLimits(Strict):
    """Calls in flight to one backend at once. (Idle connections are pooled by the one shared
    transport every backend uses, kept 30 s: there is no per-backend keep-alive to set.)"""

    max_connections: int = Field(256, ge=1)

    @model_validator(mode="before")
    @classmethod
    def _retired(cls, data: Any) -> Any:
        if isinstance(data, dict) and {"max_keepalive", "keepalive_expiry"} & set(data):
            raise ValueError(
                "max_keepalive and keepalive_expiry were never applied (every backend shares "
                "one connection pool, idle connections kept 30 s) and are no longer accepted: "
                "remove them"
            )
        return data


def _http_url(value: str) -> str:
    if not value.startswith(("http://", "https://")):
        raise ValueError("must start with http:// or https://")
    return value.rstrip("/")


HttpUrl = Annotated[str, AfterValidator(_http_url)]


class NetworkBackendBase(Strict):
    """What every backend reached over HTTP has: a secret by name, headers, timeouts, a pool."""

    api_key_env: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    timeouts: Timeouts = Timeouts()
    limits: ConnectionLimits = ConnectionLimits()


class OpenAIBackend(NetworkBackendBase):
    """Any OpenAI-compatible server: vLLM, SGLang, TGI, llama.cpp, Ollama, OpenAI itself."""

    type: Literal["openai"]
    base_url: HttpUrl


class AnthropicBackend(NetworkBackendBase):
    """Anthropic's Messages API: native for Anthropic-dialect calls, translated for OpenAI chat."""

    type: Literal["anthropic"]
    base_url: HttpUrl = "https://api.anthropic.com"
    version: str = "2023-06-01"  # sent as anthropic-version unless the client sends its own


class AzureOpenAIBackend(NetworkBackendBase):
    """Azure OpenAI: `{endpoint}/openai/deployments/{deployment}/...?api-version=...` with an
    `api-key` header. A target's model names the deployment, unless `deployments` maps it."""

    type: Literal["azure_openai"]
    endpoint: HttpUrl
    api_version: str
    deployments: dict[str, str] = Field(default_factory=dict)


class SimBackend(SimConfig):
    """The built-in GPU simulator, run in-process behind the gateway (no socket)."""

    type: Literal["sim"]
    timeouts: Timeouts = Timeouts()


Backend = Annotated[
    OpenAIBackend | AnthropicBackend | AzureOpenAIBackend | SimBackend,
    Field(discriminator="type"),
]
NetworkBackend = OpenAIBackend | AnthropicBackend | AzureOpenAIBackend


class TargetConfig(Strict):
    backend: str
    model: str
    tier: str | None = None


class ModelConfig(Strict):
    """A model alias clients use, and the targets that can serve it."""

    targets: tuple[TargetConfig, ...] = Field(min_length=1)
    strategy: Literal["round_robin"] = "round_robin"
    owned_by: str = "tollgate"


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
    policy_files: tuple[str, ...] = ()
    policies: tuple[PolicyConfig, ...] = ()
    pricing: tuple[PriceConfig, ...] = ()
    limits: LimitsConfig = LimitsConfig()
    database: DatabaseConfig = DatabaseConfig()
    keys: KeysConfig = KeysConfig()
    admin: AdminConfig = AdminConfig()
    audit: AuditConfig = AuditConfig()
    telemetry: TelemetryConfig = TelemetryConfig()


class PolicyFile(Strict):
    """A file under policies/: an ordered list appended to the main chain, and budgets and rate
    limits added to the main file's `limits` (names must be unique across all files)."""

    policies: tuple[PolicyConfig, ...] = ()
    budgets: tuple[BudgetConfig, ...] = ()
    rate_limits: tuple[RateLimitConfig, ...] = ()
