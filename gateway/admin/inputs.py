"""What the admin operations accept: validated once by pydantic models, so the CLI and the
HTTP API accept exactly the same things and say the same things when they are wrong."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Input(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
