"""Process settings: where to listen and which config to load. Not reloadable; the CLI maps 1:1."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field


class Settings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    config_path: str | None = None
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    workers: int = Field(1, ge=1)
    pool_connections: int = Field(1024, ge=1)

    @property
    def embedded(self) -> bool:
        return self.config_path is None

    def resolved_config_path(self) -> str:
        if self.config_path is not None:
            return self.config_path
        return str(Path(str(files("gateway") / "defaults" / "embedded.yaml")))
