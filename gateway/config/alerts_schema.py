"""Budget alerts' settings (`limits.alerts` in tollgate.yaml): where alerts go and how hard
Tollgate tries to deliver them. Which thresholds fire is each budget's `alert_at`."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Percent = int  # of the budget's limit: 50, 80, 100 (above 100 for soft budgets)


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


def thresholds(values: tuple[Percent, ...]) -> tuple[Percent, ...]:
    """Sorted, each once, each a percentage from 1 to 1000."""
    for value in values:
        if not 1 <= value <= 1000:
            raise ValueError(f"alert threshold {value} must be a percentage from 1 to 1000")
    return tuple(sorted(set(values)))


class WebhookConfig(_Strict):
    """An alert receiver: generic JSON (`json`) or a Slack incoming webhook (`slack`; also
    what Mattermost and Discord's Slack-compatible endpoints take). The URL, which usually
    holds a secret, is best named by environment variable."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    url: str | None = None
    url_env: str | None = None
    format: Literal["json", "slack"] = "json"
    headers: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one_url(self) -> WebhookConfig:
        if (self.url is None) == (self.url_env is None):
            raise ValueError("give exactly one of url and url_env")
        if self.url is not None and not self.url.startswith(("http://", "https://")):
            raise ValueError("url must start with http:// or https://")
        return self


class AlertsConfig(_Strict):
    webhooks: tuple[WebhookConfig, ...] = ()
    # Thresholds for budgets that set no `alert_at` of their own (run-time budgets included).
    default_alert_at: tuple[Percent, ...] = ()
    attempts: int = Field(6, ge=1, le=50)  # per webhook and alert, the first try included
    backoff_seconds: float = Field(1.0, gt=0, le=3600)  # doubled after each failed try...
    max_backoff_seconds: float = Field(300.0, gt=0, le=86_400)  # ...up to this
    timeout_seconds: float = Field(10.0, gt=0, le=300)

    @field_validator("default_alert_at")
    @classmethod
    def _thresholds(cls, value: tuple[Percent, ...]) -> tuple[Percent, ...]:
        return thresholds(value)

    @model_validator(mode="after")
    def _names(self) -> AlertsConfig:
        names = [w.name for w in self.webhooks]
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise ValueError(f"webhook names must be unique: {', '.join(duplicated)}")
        return self
