"""The pipelined Redis connection the budget scripts use: protocol, timeouts, reconnects."""

from __future__ import annotations

import asyncio
import time

import pytest
import redis

from gateway.stores.counters import Charge, StoreUnavailable
from gateway.stores.redis_counters import RedisCounters
from gateway.stores.resp import RedisReplyError, RespPipe, encode, parse
from tests.support.services import (
    REDIS_URL,
    PrivateRedis,
    cluster_ok,
    redis_prefix,
    seed_elsewhere,
)
from tests.support.wait import until


def test_encode_and_parse_round_trip() -> None:
    assert encode("SET", "k", 5) == b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\n5\r\n"
    wire = b"*4\r\n:7\r\n$3\r\nabc\r\n$-1\r\n*1\r\n+OK\r\n-ERR nope\r\n"
    first = parse(wire, 0)
    assert first is not None and first[0] == [7, b"abc", None, [b"OK"]]
    second = parse(wire, first[1])
    assert second is not None and isinstance(second[0], RedisReplyError)
    assert parse(b"*2\r\n:1\r\n", 0) is None, "incomplete replies wait for more bytes"
    assert parse(b"$5\r\nab", 0) is None


async def test_pipelined_calls_are_answered_in_order() -> None:
    pipe = RespPipe(REDIS_URL, 2.0)
    try:
        replies = await asyncio.gather(*(pipe.call("ECHO", str(i)) for i in range(200)))
        assert replies == [str(i).encode() for i in range(200)]
        with pytest.raises(RedisReplyError):
            await pipe.call("NOSUCHCOMMAND")
        assert await pipe.call("PING") == b"PONG", "an error reply does not break the pipe"
    finally:
        await pipe.aclose()


async def test_a_silent_server_times_out() -> None:
    writers: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)  # reads, never answers

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    pipe = RespPipe(f"redis://127.0.0.1:{port}/0", 0.2)
    started = time.monotonic()
    with pytest.raises(StoreUnavailable, match="no answer"):
        await pipe.call("PING")
    assert time.monotonic() - started < 1.0
    await pipe.aclose()
    for writer in writers:
        writer.close()
        await writer.wait_closed()
    server.close()
    await server.wait_closed()


async def test_reconnects_after_the_server_comes_back() -> None:
    with PrivateRedis() as private:
        pipe = RespPipe(private.url, 1.0)
        assert await pipe.call("PING") == b"PONG"
        private.kill()
        with pytest.raises(StoreUnavailable):
            await pipe.call("PING")
        private.start()
        assert await pipe.call("PING") == b"PONG"
        await pipe.aclose()


async def test_scripts_survive_a_script_cache_flush() -> None:
    with redis_prefix() as prefix:
        store = RedisCounters(REDIS_URL, prefix, 2.0)
        try:
            assert await store.reserve([Charge("c", 2, 10, 60)]) == [2]
            with redis.Redis.from_url(REDIS_URL) as client:
                client.script_flush()
            assert await store.reserve([Charge("c", 3, 10, 60)]) == [5], "EVAL fallback"
        finally:
            await store.aclose()


async def test_selects_the_database_in_the_url() -> None:
    with redis_prefix("redis://127.0.0.1:6379/3") as prefix:
        store = RedisCounters("redis://127.0.0.1:6379/3", prefix, 2.0)
        try:
            await store.reserve([Charge("n", 4, None, 60)])
            with redis.Redis(db=3) as db3, redis.Redis(db=0) as db0:
                assert db3.get("{" + prefix + "}:n") == b"4"
                assert db0.get("{" + prefix + "}:n") is None
        finally:
            await store.aclose()


async def test_a_reply_nobody_asked_for_drops_the_connection() -> None:
    from gateway.stores.resp import _Protocol

    class Transport:
        closed = False

        def close(self) -> None:
            self.closed = True

    proto = _Protocol(1.0)
    transport = Transport()
    proto.connection_made(transport)  # type: ignore[arg-type]
    proto.data_received(b"+OK\r\n")
    assert isinstance(proto.lost, StoreUnavailable) and transport.closed


async def test_on_a_cluster_the_pipe_follows_its_slot_to_the_node_that_owns_it(
    cluster: list[PrivateRedis],
) -> None:
    """Pipelined calls sent to a node that does not own the slot all come back MOVED; each is
    retried on the owner, the old connection closes once answered, and nothing runs twice."""
    key = "{tgtest-moved}:n"
    pipe = RespPipe(seed_elsewhere(cluster, key), 2.0)
    try:
        results = await asyncio.gather(*(pipe.call("INCR", key) for _ in range(50)))
        assert sorted(results) == list(range(1, 51))
        owner = pipe.address
        assert await pipe.call("GET", key) == b"50" and pipe.address == owner
    finally:
        await pipe.aclose()
        owner_client = redis.Redis(port=owner[1])
        owner_client.delete(key)
        owner_client.close()


async def test_a_cluster_without_the_counters_slot_is_an_outage_not_a_refusal(
    cluster: list[PrivateRedis],
) -> None:
    """CLUSTERDOWN (a slot with no node) must fail calls as the store being away, which
    `on_store_failure` decides about, never as the store rejecting what it was sent."""
    from redis.crc import key_slot

    with redis_prefix(cluster[0].url) as prefix:
        store = RedisCounters(cluster[0].url, prefix, 2.0, cluster=True)
        slot = key_slot(("{" + prefix + "}").encode())
        owner = next(redis.Redis(port=n.port) for n in cluster if _owns(n.port, slot))
        try:
            assert await store.reserve([Charge("k", 1, 10, 0)]) == [1]
            owner.execute_command("CLUSTER", "DELSLOTS", slot)
            with pytest.raises(StoreUnavailable):
                await store.reserve([Charge("k", 1, 10, 0)])
        finally:
            owner.execute_command("CLUSTER", "ADDSLOTS", slot)
            owner.close()
            await store.aclose()
            # The session's other tests share this cluster: it is whole again before they run.
            until(lambda: all(cluster_ok(n) for n in cluster), timeout=20)


def _owns(port: int, slot: int) -> bool:
    client = redis.Redis(port=port)
    try:
        return any(r[0] <= slot <= r[1] and r[2][1] == port
                   for r in client.execute_command("CLUSTER SLOTS"))  # fmt: skip
    finally:
        client.close()
