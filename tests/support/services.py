"""Fresh, isolated state on the shared services, and private servers for outage tests."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator

import redis
from sqlalchemy import create_engine, text

from tests.support.servers import free_port

REDIS_URL = "redis://127.0.0.1:6379/0"
PG_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


@contextlib.contextmanager
def redis_prefix(url: str = REDIS_URL) -> Iterator[str]:
    """A key prefix no other test uses (the counters' keys: `{prefix}:...`, a hash tag);
    every key under it is deleted afterwards."""
    prefix = f"tgtest-{uuid.uuid4().hex[:12]}"
    try:
        yield prefix
    finally:
        _drop(url, "\\{" + prefix + "\\}:*")


@contextlib.contextmanager
def cache_prefix(url: str = REDIS_URL) -> Iterator[str]:
    """A key prefix no other test uses for stores whose keys start with it (the response
    cache, the shared prefix index); every key under it is deleted afterwards."""
    prefix = f"tgtest-cache-{uuid.uuid4().hex[:12]}:"
    try:
        yield prefix
    finally:
        _drop(url, prefix + "*")


def _drop(url: str, pattern: str) -> None:
    client = redis.Redis.from_url(url)
    with contextlib.suppress(redis.RedisError):
        keys = list(client.scan_iter(match=pattern, count=1000))
        if keys:
            client.delete(*keys)
    client.close()


@contextlib.contextmanager
def postgres_database() -> Iterator[str]:
    """A new PostgreSQL database for one test, dropped afterwards; yields its URL."""
    name = f"tgtest_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


class PrivateRedis:
    """A redis-server of the test's own on a free port, so an outage hurts nobody else."""

    def __init__(self) -> None:
        self.port = free_port()
        self._dir = tempfile.mkdtemp(prefix="tg-redis-")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> PrivateRedis:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self._dir],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        client = redis.Redis(port=self.port)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise RuntimeError("private redis-server did not start") from None
                time.sleep(0.02)
        client.close()
        return self

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def __enter__(self) -> PrivateRedis:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.kill()
        shutil.rmtree(self._dir, ignore_errors=True)
