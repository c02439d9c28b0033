"""HMAC signatures on chain heads and checkpoints.

The hash chain alone shows a row was altered, but someone with write access could recompute
every hash after their edit; they cannot recompute a signature without the key, which never
enters the database. The key is `audit.signing_key_env` when set, else derived from the
server secret (TOLLGATE_SECRET or the embedded one), so `tollgate audit verify` run beside the
gateway has it too.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from pathlib import Path

from sqlalchemy import Connection, insert

from gateway.audit import tables
from gateway.audit.events import to_datetime


class Signer:
    def __init__(self, key: bytes) -> None:
        self._key = key

    def _sign(self, *parts: object) -> str:
        message = "|".join(str(p) for p in parts).encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    def head(self, chain_id: str, seq: int, row_hash: str) -> str:
        return self._sign("head", chain_id, seq, row_hash)

    def checkpoint(self, kind: str, chain_id: str, seq: int, row_hash: str, created_us: int) -> str:
        return self._sign("checkpoint", kind, chain_id, seq, row_hash, created_us)

    def acknowledgement(
        self, chain_id: str, first: int | None, last: int | None, note: str, created_us: int
    ) -> str:
        return self._sign("ack", chain_id, first, last, note, created_us)

    @staticmethod
    def same(expected: str, given: str) -> bool:
        return hmac.compare_digest(expected, given)


def insert_checkpoint(
    conn: Connection, signer: Signer, chain_id: str, kind: str, seq: int, row_hash: str, now: float
) -> None:
    """A signed mark that row `seq` of the chain had `row_hash` (periodic, shutdown, prune)."""
    created = round(now * 1_000_000)
    conn.execute(
        insert(tables.checkpoints).values(
            chain_id=chain_id,
            seq=seq,
            row_hash=row_hash,
            kind=kind,
            created_at=to_datetime(created),
            signature=signer.checkpoint(kind, chain_id, seq, row_hash, created),
        )
    )


def signing_key(env_name: str | None, secret_env: str, data_dir: Path) -> bytes:
    from gateway.stores.secret import server_secret

    if env_name:
        value = os.environ.get(env_name)
        if not value:
            raise ValueError(f"audit.signing_key_env names {env_name}, which is not set")
        return value.encode()
    secret = server_secret(secret_env, data_dir)
    return hmac.new(secret, b"tollgate-audit-checkpoints", hashlib.sha256).digest()
