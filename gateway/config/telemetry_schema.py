"""The `telemetry:` section of tollgate.yaml (docs/telemetry.md)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class OtlpConfig(_Strict):
    """Where traces and metrics go by OTLP; no endpoint: nothing leaves the process."""

    endpoint: str | None = None  # e.g. http://otel-collector:4318 (http) or :4317 (grpc)
    # http/json costs the gateway ~5x less per exported span than http/protobuf (docs/telemetry.md)
    protocol: Literal["http/protobuf", "http/json", "grpc"] = "http/protobuf"
    headers: dict[str, str] = Field(default_factory=dict)  # ${ENV} works, for tokens
    traces: bool = True
    metrics: bool = True
    timeout_seconds: float = Field(10.0, gt=0)
    metrics_interval_seconds: float = Field(30.0, gt=0)

    @field_validator("endpoint")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/") if value else value


class RollupsConfig(_Strict):
    enabled: bool = True
    flush_seconds: float = Field(5.0, gt=0, le=3600)


class DashboardConfig(_Strict):
    # A read-only key for /dashboard (besides the admin key), read from this variable.
    key_env: str | None = "TOLLGATE_DASHBOARD_KEY"
    refresh_seconds: int = Field(30, ge=5, le=3600)


class PrometheusConfig(_Strict):
    """`GET /metrics`. `protected`: only with the admin or dashboard key (as the dashboard's
    data), for gateways whose listen address is reachable by clients."""

    protected: bool = False


class TelemetryConfig(_Strict):
    """Traces (GenAI semantic conventions), metrics and spend rollups. `enabled: false` turns
    all three off (and with them the dashboard's data)."""

    enabled: bool = True
    service_name: str = "tollgate"
    # Share of traces exported by OTLP (a client's sampled flag wins). Rollups and metrics see
    # every call whatever this is.
    sample_ratio: float = Field(1.0, ge=0, le=1)
    otlp: OtlpConfig = OtlpConfig()
    rollups: RollupsConfig = RollupsConfig()
    dashboard: DashboardConfig = DashboardConfig()
    prometheus: PrometheusConfig = PrometheusConfig()
