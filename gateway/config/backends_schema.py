"""Each backend type's settings (the `backends:` entries of tollgate.yaml): strict, frozen
pydantic models, owned by the backends package so that each type's builder (registry.py) takes
its own typed settings."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from gateway.sim.config import SimConfig


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


class HealthCheck(Strict):
    """Active checks: GET `path` (from the server's root) every `interval_seconds`; a failure
    opens the replicas' circuits, a success closes them."""

    path: str = "/health"
    interval_seconds: float = Field(10.0, gt=0, le=3600)
    timeout_seconds: float = Field(2.0, gt=0, le=60)


class LoadMetrics(Strict):
    """The engine's own load from its Prometheus endpoint (vLLM's names:
    `vllm:num_requests_running`, `vllm:num_requests_waiting`, `vllm:kv_cache_usage_perc`),
    polled off the request path and used by `least_outstanding`."""

    path: str = "/metrics"
    interval_seconds: float = Field(5.0, gt=0, le=3600)


class CoalesceEmbeddings(Strict):
    """Concurrent small embedding calls to one model merged into one upstream call: calls that
    arrive while one is in flight gather for `window_ms` (or `max_inputs`) and go together (a
    lone call goes at once). On by default for local engines, off for vendors (`false`)."""

    window_ms: float = Field(2.0, gt=0, le=1000)
    max_inputs: int = Field(256, ge=2, le=100_000)


Coalescing = CoalesceEmbeddings | bool | None  # None: the backend kind's default


def coalescing(setting: Coalescing, local: bool) -> tuple[float, int] | None:
    """(window in seconds, most inputs) if embedding calls are merged, else None."""
    if setting is None:
        setting = local
    if setting is False:
        return None
    chosen = setting if isinstance(setting, CoalesceEmbeddings) else CoalesceEmbeddings()
    return chosen.window_ms / 1000, chosen.max_inputs


class NetworkBackendBase(Strict):
    """What every backend reached over HTTP has: a secret by name, headers, timeouts, a pool."""

    api_key_env: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    timeouts: Timeouts = Timeouts()
    limits: ConnectionLimits = ConnectionLimits()
    health: HealthCheck | None = None
    load_metrics: LoadMetrics | None = None
    # KV tokens the engine holds (prefix-aware routing sizes its index from it, unless the
    # engine reports vllm:cache_config_info on its polled metrics).
    kv_capacity_tokens: int | None = Field(None, ge=1, le=10_000_000_000)
    coalesce_embeddings: Coalescing = None


class OpenAIBackend(NetworkBackendBase):
    """Any OpenAI-compatible server: vLLM, SGLang, TGI, llama.cpp, Ollama, OpenAI itself."""

    type: Literal["openai"]
    base_url: HttpUrl
    # The engine takes vLLM's per-request `cache_salt` (vLLM >= 0.9): tenants' KV blocks are
    # kept apart by it (the alias's `kv_isolation`). Off for servers that would refuse it.
    cache_salt: bool = False
    # The server takes OpenAI's `prompt_cache_key` (rules' `prompt_cache` action sets it to the
    # tenant's). Unset: yes for api.openai.com, no elsewhere (other servers may refuse it).
    prompt_cache_key: bool | None = None
    # The server serves the Responses API itself (/v1/responses: OpenAI, recent vLLM);
    # otherwise Responses calls reach it as chat completions. Unset: yes for api.openai.com.
    responses: bool | None = None


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
    responses: bool = False  # Responses calls sent to its own /v1/responses, not translated
    coalesce_embeddings: Coalescing = None
    timeouts: Timeouts = Timeouts()
    health: HealthCheck | None = None
    load_metrics: LoadMetrics | None = None


Backend = Annotated[
    OpenAIBackend | AnthropicBackend | AzureOpenAIBackend | SimBackend,
    Field(discriminator="type"),
]
NetworkBackend = OpenAIBackend | AnthropicBackend | AzureOpenAIBackend
