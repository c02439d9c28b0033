"""Virtual keys in memory: found by HMAC digest; revoked and expired keys are refused."""

from __future__ import annotations

import pytest

from gateway.auth import KeyRing, StaticKeys, WithVirtualKeys, key_digest
from gateway.call import Principal
from gateway.errors import AuthenticationFailed
from gateway.stores.keys import KeyRow, digest

SECRET = b"server-secret"


def row(key: str, **kw: object) -> KeyRow:
    fields: dict[str, object] = {
        "id": "key_1",
        "name": "svc",
        "prefix": key[:10],
        "secret_hash": digest(SECRET, key),
        "user": "u",
        "team": "t",
        "org": "o",
        "tags": ("a",),
        "models": ("chat",),
        "created_at": 0.0,
        "expires_at": None,
        "revoked_at": None,
        **kw,
    }
    return KeyRow(**fields)  # type: ignore[arg-type]


def test_lookup_by_hmac_digest() -> None:
    ring = KeyRing(SECRET)
    ring.replace([row("tg-good")])
    principal = ring.lookup("tg-good")
    assert principal is not None
    assert (principal.name, principal.team, principal.org, principal.models) == (
        "svc", "t", "o", frozenset({"chat"})
    )  # fmt: skip
    assert ring.lookup("tg-other") is None
    assert ring.lookup("sk-not-ours") is None
    assert KeyRing(b"another-secret").lookup("tg-good") is None


def test_revoked_and_expired_keys_are_refused() -> None:
    now = [100.0]
    ring = KeyRing(SECRET, clock=lambda: now[0])
    ring.replace([row("tg-gone", revoked_at=5.0), row("tg-old", id="k2", expires_at=150.0)])
    with pytest.raises(AuthenticationFailed, match="revoked"):
        ring.lookup("tg-gone")
    assert ring.lookup("tg-old") is not None
    now[0] = 150.0
    with pytest.raises(AuthenticationFailed, match="expired"):
        ring.lookup("tg-old")


def test_virtual_keys_then_static_keys() -> None:
    ring = KeyRing(SECRET)
    ring.replace([row("tg-virtual")])
    static = StaticKeys({key_digest("tg-static"): Principal("s", "static")})
    auth = WithVirtualKeys(ring, static)
    assert auth.authenticate("tg-virtual").name == "svc"
    assert auth.authenticate("tg-static").name == "static"
    with pytest.raises(AuthenticationFailed):
        auth.authenticate("tg-neither")


def test_a_rotated_keys_old_secret_works_until_its_grace_ends() -> None:
    now = [100.0]
    ring = KeyRing(SECRET, clock=lambda: now[0])
    rotated = row(
        "tg-new", previous_hash=digest(SECRET, "tg-old"), previous_prefix="tg-old",
        previous_expires_at=200.0, rotated_at=100.0,
    )  # fmt: skip
    ring.replace([rotated])
    new, old = ring.lookup("tg-new"), ring.lookup("tg-old")
    assert new is not None and old is not None
    assert new.key_id == old.key_id == "key_1"  # one key: its budgets and history are the id's
    now[0] = 200.0
    with pytest.raises(AuthenticationFailed, match="rotated") as info:
        ring.lookup("tg-old")
    assert info.value.code == "rotated_api_key"
    assert ring.lookup("tg-new") is not None
