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

    def start(self, *options: str) -> PrivateRedis:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self._dir, *options],
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


@contextlib.contextmanager
def redis_cluster(nodes: int = 3) -> Iterator[list[PrivateRedis]]:
    """A Redis Cluster of `nodes` primaries on free loopback ports (slots split evenly), the
    test's own; yields the nodes (the first one's URL is a seed), stopped and removed after."""
    with contextlib.ExitStack() as stack:
        members = [PrivateRedis() for _ in range(nodes)]
        for member in members:
            # The bus port is its own free port (the default, port + 10000, may not exist).
            stack.enter_context(_started(member, "--cluster-enabled", "yes",
                                         "--cluster-port", str(free_port()),
                                         "--cluster-node-timeout", "2000"))  # fmt: skip
        cli = shutil.which("redis-cli") or "/usr/bin/redis-cli"
        addresses = [f"127.0.0.1:{m.port}" for m in members]
        subprocess.run([cli, "--cluster", "create", *addresses, "--cluster-replicas", "0",
                        "--cluster-yes"], check=True, capture_output=True, timeout=60)  # fmt: skip
        deadline = time.monotonic() + 20
        while not all(cluster_ok(m) for m in members):
            if time.monotonic() > deadline:
                raise RuntimeError("the test's Redis Cluster did not converge")
            time.sleep(0.05)
        yield members


@contextlib.contextmanager
def _started(member: PrivateRedis, *options: str) -> Iterator[PrivateRedis]:
    member.start(*options)
    try:
        yield member
    finally:
        member.__exit__()


def cluster_ok(node: PrivateRedis) -> bool:
    """The node sees every slot served."""
    client = redis.Redis(port=node.port)
    try:
        info = client.execute_command("CLUSTER INFO")  # redis-py parses it into a dict
    finally:
        client.close()
    return bool(info.get("cluster_state") == "ok")


def seed_elsewhere(nodes: list[PrivateRedis], key: str) -> str:
    """The URL of a cluster node that does not own `key`'s slot."""
    from redis.crc import key_slot

    slot = key_slot(key.encode())
    client = redis.Redis(port=nodes[0].port)
    try:
        ranges = client.execute_command("CLUSTER SLOTS")
    finally:
        client.close()
    owner = next(r[2][1] for r in ranges if r[0] <= slot <= r[1])
    return next(n.url for n in nodes if n.port != owner)
