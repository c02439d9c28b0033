"""Bearer key -> Principal. Keys are compared by SHA-256 digest, so lookup time does not
depend on how much of a guessed key is right."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Protocol

from gateway.call import Principal
from gateway.errors import AuthenticationFailed


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
