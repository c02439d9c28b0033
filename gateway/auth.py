"""Bearer key -> Principal. Keys are compared by SHA-256 digest, so lookup time does not
depend on how much of a guessed key is right."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Protocol

from gateway.call import Principal
from gateway.errors import AuthenticationFailed
from gateway.stores.keys import SECRET_PREFIX, KeyRow, digest


class Authenticator(Protocol):
    """Raises AuthenticationFailed (401) for a missing or unknown key; never blocks."""

    def authenticate(self, token: str | None) -> Principal: ...


def key_digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class StaticKeys:
    """Keys listed in the config (by env var or digest) until virtual keys land."""

    def __init__(self, principals: Mapping[str, Principal]) -> None:
        self._by_digest = dict(principals)

    def authenticate(self, token: str | None) -> Principal:
        if not token:
            raise AuthenticationFailed(
                "Missing API key: send it as 'Authorization: Bearer <key>'.", code="missing_api_key"
            )
        principal = self._by_digest.get(key_digest(token))
        if principal is None:
            raise AuthenticationFailed("Incorrect API key provided.")
        return principal


class OpenAccess:
    """Accepts any key (simulated deployments only): every caller is the one `open` principal."""

    def __init__(self, principal: Principal) -> None:
        self._principal = principal

    def authenticate(self, token: str | None) -> Principal:
        return self._principal


class KeyRing:
    """Virtual keys (SQL), held in memory by HMAC digest and replaced wholesale when the table
    changes (a background poll), so a lookup is one HMAC and one dict probe, and a revocation
    reaches every process within one poll interval."""

    def __init__(self, server_secret: bytes, clock: Callable[[], float] = time.time) -> None:
        self._secret = server_secret
        self._clock = clock
        self._by_digest: dict[str, tuple[KeyRow, Principal]] = {}
        self._grace: dict[str, float] = {}  # a rotated-out secret's digest -> when it stops

    @property
    def secret(self) -> bytes:
        """The HMAC key new keys are hashed with (never logged, never stored in SQL)."""
        return self._secret

    def replace(self, rows: Iterable[KeyRow]) -> None:
        by_digest: dict[str, tuple[KeyRow, Principal]] = {}
        grace: dict[str, float] = {}
        for row in rows:
            entry = (row, _principal(row))
            by_digest[row.secret_hash] = entry
            if row.previous_hash is not None and row.previous_expires_at is not None:
                # A rotated key's old secret: the same key (id, budgets) until its grace ends.
                by_digest[row.previous_hash] = entry
                grace[row.previous_hash] = row.previous_expires_at
        self._by_digest, self._grace = by_digest, grace

    def __len__(self) -> int:
        return len(self._by_digest)

    def lookup(self, token: str) -> Principal | None:
        """The key's principal; None if it is not a virtual key; 401 if revoked or expired."""
        if not token.startswith(SECRET_PREFIX):
            return None
        hashed = digest(self._secret, token)
        found = self._by_digest.get(hashed)
        if found is None:
            return None
        row, principal = found
        ends = self._grace.get(hashed)
        if ends is not None and ends <= self._clock():
            raise AuthenticationFailed(
                "This API key was rotated and its grace period has ended; use the new secret.",
                code="rotated_api_key",
            )
        if row.revoked_at is not None:
            raise AuthenticationFailed("This API key has been revoked.", code="revoked_api_key")
        if row.expires_at is not None and row.expires_at <= self._clock():
            raise AuthenticationFailed("This API key has expired.", code="expired_api_key")
        return principal


class WithVirtualKeys:
    """Virtual keys first, then the configured static keys (or open access)."""

    def __init__(self, ring: KeyRing, fallback: Authenticator) -> None:
        self._ring = ring
        self._fallback = fallback

    def authenticate(self, token: str | None) -> Principal:
        if token:
            principal = self._ring.lookup(token)
            if principal is not None:
                return principal
        return self._fallback.authenticate(token)


def _principal(row: KeyRow) -> Principal:
    return Principal(
        key_id=row.id,
        name=row.name,
        user=row.user,
        team=row.team,
        org=row.org,
        tags=row.tags,
        models=frozenset(row.models) if row.models is not None else None,
    )
