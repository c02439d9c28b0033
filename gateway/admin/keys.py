"""Keys, shared by `tollgate keys` and /admin/keys: created (names unique across static and
virtual keys), listed, revoked, and a key's id found by its name."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime

from pydantic import Field, field_validator
from sqlalchemy import Engine

from gateway.admin.inputs import Input
from gateway.auth import key_digest
from gateway.config.schema import Config
from gateway.stores.keys import (
    KeyNotFound,
    KeyRefused,
    KeyRow,
    create_key,
    list_keys,
    revoke_key,
    rotate_key,
)

_DURATION = re.compile(r"^(\d+)([smhdw])$")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


class KeyCreate(Input):
    name: str = Field(min_length=1, max_length=200)
    team: str | None = None
    user: str | None = None
    org: str | None = None
    tags: tuple[str, ...] = ()
    models: tuple[str, ...] | None = None
    expires: str | None = None  # ISO 8601 instant, or a duration from now: 30d, 12h, 90m

    def expires_at(self, now: float) -> float | None:
        return parse_expiry(self.expires, now) if self.expires is not None else None

    @field_validator("expires")
    @classmethod
    def _parsable(cls, value: str | None) -> str | None:
        if value is not None:
            parse_expiry(value, 0.0)
        return value


class KeyRotate(Input):
    # How long the current secret keeps working beside the new one: 24h, 30m, 0s (at once).
    grace: str = "24h"

    @field_validator("grace")
    @classmethod
    def _duration(cls, value: str) -> str:
        if _DURATION.match(value) is None:
            raise ValueError(f"{value!r} is not a duration like 24h, 30m or 0s")
        return value

    def grace_seconds(self) -> int:
        found = _DURATION.match(self.grace)
        assert found is not None
        return int(found.group(1)) * _SECONDS[found.group(2)]


def rotate(engine: Engine, secret: bytes, key: str, spec: KeyRotate) -> tuple[KeyRow, str]:
    """A new secret for KEY (id or name); the old one works for the grace period, then stops."""
    return rotate_key(engine, secret, key, spec.grace_seconds(), time.time())


def iso(epoch: float | None) -> str | None:
    """A time as `keys list` shows it: ISO 8601 in UTC, to the second."""
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def parse_expiry(value: str, now: float) -> float:
    """An ISO 8601 instant (with its zone), or a duration from `now` such as 30d or 12h."""
    found = _DURATION.match(value)
    if found:
        return now + int(found.group(1)) * _SECONDS[found.group(2)]
    try:
        when = datetime.fromisoformat(value)
    except ValueError as exc:
        raise ValueError(f"{value!r} is neither an ISO 8601 time nor a duration like 30d") from exc
    if when.tzinfo is None:
        raise ValueError("give the time zone too (e.g. 2027-01-01T00:00:00Z)")
    return when.timestamp()


def key_ids(config: Config, engine: Engine, env: Mapping[str, str]) -> Callable[[str], str | None]:
    """A key's id by its name: a virtual key's from SQL, a static key's from its hash (given,
    or of its secret when this process has it)."""
    virtual = {row.name: row.id for row in list_keys(engine)}
    static: dict[str, str] = {}
    for key in config.auth.keys:
        secret = env.get(key.key_env) if key.key_env else None
        sha = key.key_sha256 or (key_digest(secret) if secret else None)
        if sha is not None:
            static[key.name] = sha[:16]
    return lambda name: virtual.get(name) or static.get(name)


def new_key(
    engine: Engine, secret: bytes, spec: KeyCreate, config: Config | None = None
) -> tuple[KeyRow, str]:
    """A virtual key; its name may not be a static key's either (names are unique across
    both, so per-key spend rows and reports never mix two keys)."""
    if config is not None and any(k.name == spec.name for k in config.auth.keys):
        raise KeyRefused(f"a static key named {spec.name!r} is configured; choose another name")
    return create_key(
        engine,
        secret,
        name=spec.name,
        user=spec.user,
        team=spec.team,
        org=spec.org,
        tags=spec.tags,
        models=spec.models,
        expires_at=spec.expires_at(time.time()),
    )


__all__ = ["KeyCreate", "KeyNotFound", "KeyRefused", "KeyRotate", "KeyRow", "iso", "key_ids",
           "list_keys", "new_key", "parse_expiry", "revoke_key", "rotate"]  # fmt: skip
