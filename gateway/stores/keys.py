"""Virtual keys in SQL: created with a secret shown once, stored only as an HMAC digest.

The HMAC key (the server secret) never sits in the database, so a leaked table is not a list
of usable keys, nor of offline-guessable hashes.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, Engine, RowMapping, func, insert, or_, select, update

from gateway.errors import Fault
from gateway.stores.sql import api_keys, revisions

SECRET_PREFIX = "tg-"


@dataclass(frozen=True, slots=True)
class KeyRow:
    id: str
    name: str
    prefix: str
    secret_hash: str
    user: str | None
    team: str | None
    org: str | None
    tags: tuple[str, ...]
    models: tuple[str, ...] | None
    created_at: float
    expires_at: float | None
    revoked_at: float | None
    previous_hash: str | None = None
    previous_prefix: str | None = None
    previous_expires_at: float | None = None
    rotated_at: float | None = None

    def public(self) -> dict[str, object]:
        """What `keys list` and /admin/keys show: everything but the digest."""
        return {
            "id": self.id,
            "name": self.name,
            "prefix": self.prefix,
            "user": self.user,
            "team": self.team,
            "org": self.org,
            "tags": list(self.tags),
            "models": list(self.models) if self.models is not None else None,
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "revoked_at": self.revoked_at,
            "rotated_at": self.rotated_at,
            "previous_prefix": self.previous_prefix,
            "previous_expires_at": self.previous_expires_at,
        }


class KeyRefused(Fault, LookupError):
    """A key operation named a key that does not exist, or a name already taken."""


class KeyNotFound(KeyRefused):
    """No key has that id or name."""


def digest(server_secret: bytes, key: str) -> str:
    return hmac.new(server_secret, key.encode(), hashlib.sha256).hexdigest()


def bump(conn: Connection, name: str) -> None:
    """Advance a change counter in the same transaction as the change it announces."""
    updated = conn.execute(
        update(revisions).where(revisions.c.name == name).values(value=revisions.c.value + 1)
    )
    if updated.rowcount == 0:
        conn.execute(insert(revisions).values(name=name, value=1))


def revision(engine: Engine, name: str) -> int:
    with engine.connect() as conn:
        value = conn.execute(select(revisions.c.value).where(revisions.c.name == name)).scalar()
    return int(value or 0)


def create_key(
    engine: Engine,
    server_secret: bytes,
    *,
    name: str,
    user: str | None = None,
    team: str | None = None,
    org: str | None = None,
    tags: Sequence[str] = (),
    models: Sequence[str] | None = None,
    expires_at: float | None = None,
) -> tuple[KeyRow, str]:
    """The new key's row and its secret (the only time the secret exists outside a client)."""
    secret = SECRET_PREFIX + secrets.token_urlsafe(32)
    row = KeyRow(
        id="key_" + secrets.token_hex(8),
        name=name,
        prefix=secret[:10],
        secret_hash=digest(server_secret, secret),
        user=user,
        team=team,
        org=org,
        tags=tuple(tags),
        models=tuple(models) if models is not None else None,
        created_at=time.time(),
        expires_at=expires_at,
        revoked_at=None,
    )
    with engine.begin() as conn:
        taken = conn.execute(select(func.count()).where(api_keys.c.name == name)).scalar()
        if taken:
            raise KeyRefused(f"a key named {name!r} already exists")
        conn.execute(
            insert(api_keys).values(
                id=row.id,
                name=row.name,
                secret_hash=row.secret_hash,
                prefix=row.prefix,
                user_id=row.user,
                team=row.team,
                org=row.org,
                tags=json.dumps(list(row.tags)),
                models=json.dumps(list(row.models)) if row.models is not None else None,
                created_at=row.created_at,
                expires_at=row.expires_at,
            )
        )
        bump(conn, "keys")
    return row, secret


def list_keys(engine: Engine, include_revoked: bool = True) -> list[KeyRow]:
    query = select(api_keys).order_by(api_keys.c.created_at)
    if not include_revoked:
        query = query.where(api_keys.c.revoked_at.is_(None))
    with engine.connect() as conn:
        return [_row(r) for r in conn.execute(query).mappings()]


def revoke_key(engine: Engine, id_or_name: str) -> KeyRow:
    with engine.begin() as conn:
        match = or_(api_keys.c.id == id_or_name, api_keys.c.name == id_or_name)
        found = conn.execute(select(api_keys).where(match)).mappings().first()
        if found is None:
            raise KeyNotFound(f"no key with id or name {id_or_name!r}")
        if found["revoked_at"] is None:
            conn.execute(update(api_keys).where(match).values(revoked_at=time.time()))
            bump(conn, "keys")
        row = conn.execute(select(api_keys).where(match)).mappings().one()
    return _row(row)


def rotate_key(
    engine: Engine, server_secret: bytes, id_or_name: str, grace_s: float, now: float
) -> tuple[KeyRow, str]:
    """A new secret for the same key id (its budgets, limits and history are the id's, so they
    carry over); the current secret stays valid for `grace_s` seconds (0: stops at once). One
    previous secret is kept: rotating again ends the older one's grace."""
    secret = SECRET_PREFIX + secrets.token_urlsafe(32)
    with engine.begin() as conn:
        match = or_(api_keys.c.id == id_or_name, api_keys.c.name == id_or_name)
        found = conn.execute(select(api_keys).where(match)).mappings().first()
        if found is None:
            raise KeyNotFound(f"no key with id or name {id_or_name!r}")
        if found["revoked_at"] is not None:
            raise KeyRefused(f"key {found['name']!r} is revoked; create a new one instead")
        keep = grace_s > 0
        conn.execute(
            update(api_keys)
            .where(api_keys.c.id == found["id"])
            .values(
                secret_hash=digest(server_secret, secret),
                prefix=secret[:10],
                previous_hash=found["secret_hash"] if keep else None,
                previous_prefix=found["prefix"] if keep else None,
                previous_expires_at=now + grace_s if keep else None,
                rotated_at=now,
            )
        )
        bump(conn, "keys")
        row = conn.execute(select(api_keys).where(api_keys.c.id == found["id"])).mappings().one()
    return _row(row), secret


def _row(m: RowMapping) -> KeyRow:
    models = m["models"]
    return KeyRow(
        id=m["id"],
        name=m["name"],
        prefix=m["prefix"],
        secret_hash=m["secret_hash"],
        user=m["user_id"],
        team=m["team"],
        org=m["org"],
        tags=tuple(json.loads(m["tags"] or "[]")),
        models=tuple(json.loads(models)) if models is not None else None,
        created_at=m["created_at"],
        expires_at=m["expires_at"],
        revoked_at=m["revoked_at"],
        previous_hash=m["previous_hash"],
        previous_prefix=m["previous_prefix"],
        previous_expires_at=m["previous_expires_at"],
        rotated_at=m["rotated_at"],
    )
