"""Process settings: where to listen and which config to load. Not reloadable; the CLI maps 1:1."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class Settings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    config_path: str | None = None
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    workers: int = Field(1, ge=1)
    pool_connections: int = Field(1024, ge=1)
    # aiohttp's transport under the httpx API costs several times less CPU per request;
    # httpx's own transport stays available (HTTP/2 upstreams, or to compare, see bench/).
    upstream_transport: Literal["aiohttp", "httpx"] = "aiohttp"

    log_json: bool | None = None  # None: as the config's logging.json says

    def json_logs(self, configured: bool) -> bool:
        return configured if self.log_json is None else self.log_json

    @property
    def embedded(self) -> bool:
        return self.config_path is None

    def resolved_config_path(self) -> str:
        if self.config_path is not None:
            return self.config_path
        return str(Path(str(files("gateway") / "defaults" / "embedded.yaml")))
