"""A lean, pipelined Redis connection for the two scripts every budgeted call runs.

redis-py costs ~170 us of CPU per script call (command packing, its connection pool and
RESP3 parsing in Python; bench/budgets.py, docs/benchmarks.md "Budgets and rate limits"); the
budget check runs on every call, so it gets this instead: one
TCP connection per process, requests written as they come, replies matched in order (Redis
answers in order on a connection), so concurrent calls share the socket and its syscalls.
Everything else (admin reads, health checks) still goes through redis-py.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
from typing import Any
from urllib.parse import unquote, urlparse

from gateway.errors import Fault
from gateway.stores.counters import StoreUnavailable

Reply = int | bytes | list[Any] | None


class RedisReplyError(Fault):
    """Redis answered with an error (`-ERR ...`, `-NOSCRIPT ...`)."""


def encode(*args: bytes | str | int) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


def parse(buf: bytearray | bytes, pos: int) -> tuple[Reply | RedisReplyError, int] | None:
    """One reply from `buf` at `pos`, and where the next starts; None if it is incomplete."""
    end = buf.find(b"\r\n", pos)
    if end < 0:
        return None
    kind, line = buf[pos : pos + 1], bytes(buf[pos + 1 : end])
    nxt = end + 2
    if kind == b":":
        return int(line), nxt
    if kind == b"+":
        return line, nxt
    if kind == b"-":
        return RedisReplyError(line.decode(errors="replace")), nxt
    if kind == b"$":
        size = int(line)
        if size < 0:
            return None, nxt
        if len(buf) < nxt + size + 2:
            return None
        return bytes(buf[nxt : nxt + size]), nxt + size + 2
    if kind == b"*":
        count = int(line)
        if count < 0:
            return None, nxt
        items: list[Any] = []
        for _ in range(count):
            parsed = parse(buf, nxt)
            if parsed is None:
                return None
            item, nxt = parsed
            items.append(item)
        return items, nxt
    raise RedisReplyError(f"unexpected reply type {kind!r}")


# A call follows at most this many MOVED replies (a slot moves once per resharding step).
_REDIRECTS = 5


def _moved_to(exc: RedisReplyError) -> tuple[str, int] | None:
    """`MOVED <slot> <host>:<port>` -> (host, port); None for any other error."""
    parts = str(exc).split()
    if len(parts) != 3 or parts[0] != "MOVED":
        return None
    host, _, port = parts[2].rpartition(":")
    return (host or "127.0.0.1", int(port)) if port.isdigit() else None


class _Protocol(asyncio.Protocol):
    """Requests go out in one write per loop iteration; a watchdog, armed only while replies
    are awaited, fails the connection when the oldest waits past the timeout (no per-call
    timer: that alone cost more than encoding the request)."""

    def __init__(self, timeout_s: float) -> None:
        self.transport: asyncio.Transport | None = None
        self.waiting: collections.deque[asyncio.Future[Any]] = collections.deque()
        self.deadlines: collections.deque[float] = collections.deque()
        self.buffer = bytearray()
        self.lost: Exception | None = None
        self.retiring = False
        self._timeout = timeout_s
        self._outgoing: list[bytes] = []
        self._loop = asyncio.get_running_loop()
        self._watchdog: asyncio.TimerHandle | None = None

    def request(self, data: bytes) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = self._loop.create_future()
        if self.lost is not None:
            future.set_exception(self.lost)
            return future
        self.waiting.append(future)
        self.deadlines.append(self._loop.time() + self._timeout)
        if not self._outgoing:
            self._loop.call_soon(self._write)
        self._outgoing.append(data)
        if self._watchdog is None:
            self._watchdog = self._loop.call_later(self._timeout / 2, self._check)
        return future

    def _write(self) -> None:
        data, self._outgoing = b"".join(self._outgoing), []
        if self.transport is not None and self.lost is None:
            self.transport.write(data)

    def _check(self) -> None:
        self._watchdog = None
        if not self.deadlines:
            return
        if self.deadlines[0] <= self._loop.time():
            self._fail(StoreUnavailable(f"redis: no answer within {self._timeout:g}s"))
            return
        self._watchdog = self._loop.call_later(self._timeout / 2, self._check)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have the same API.
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        buf = self.buffer
        buf += data
        pos = 0
        while pos < len(buf):
            try:
                parsed = parse(buf, pos)
            except (ValueError, RedisReplyError) as exc:
                self._fail(StoreUnavailable(f"redis: unreadable reply: {exc}"))
                return
            if parsed is None:
                break
            reply, pos = parsed
            if not self.waiting:  # a reply nobody asked for: the stream is out of step
                self._fail(StoreUnavailable("redis: unexpected reply; reconnecting"))
                return
            future = self.waiting.popleft()
            self.deadlines.popleft()
            if future.done():  # its caller timed out; the reply is dropped in order
                continue
            if isinstance(reply, RedisReplyError):
                future.set_exception(reply)
            else:
                future.set_result(reply)
        del buf[:pos]
        if self.retiring and not self.waiting and self.transport is not None:
            self.transport.close()

    def retire(self) -> None:
        """Close once every request sent has its reply (now, if none is outstanding)."""
        self.retiring = True
        if not self.waiting and self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(StoreUnavailable(f"redis: connection lost ({exc or 'closed'})"))

    def _fail(self, exc: Exception) -> None:
        if self.lost is None:
            self.lost = exc
        self.deadlines.clear()
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        while self.waiting:
            future = self.waiting.popleft()
            if not future.done():
                future.set_exception(exc)
        if self.transport is not None:
            self.transport.close()


class RespPipe:
    """`await pipe.call("EVALSHA", ...)`; reconnects on the next call after a failure.

    On a Redis Cluster every call goes to one slot (the counters share a hash tag), so the pipe
    follows a MOVED reply to that slot's node and stays there; a node that cannot be reached
    sends it back to the URL's node (the seed), which names the slot's new owner after a
    failover."""

    def __init__(self, url: str, timeout_s: float) -> None:
        parts = urlparse(url)
        if parts.scheme not in ("redis", "rediss"):
            raise ValueError(f"unsupported Redis URL scheme {parts.scheme!r}")
        self._seed = (parts.hostname or "127.0.0.1", parts.port or 6379)
        self._host, self._port = self._seed
        self._db = int(parts.path.lstrip("/") or 0)
        self._user = unquote(parts.username) if parts.username else None
        self._password = unquote(parts.password) if parts.password else None
        self._ssl = ssl.create_default_context() if parts.scheme == "rediss" else None
        self._timeout = timeout_s
        self._proto: _Protocol | None = None
        self._connecting: asyncio.Lock | None = None

    async def call(self, *args: bytes | str | int) -> Any:
        request = encode(*args)
        for _ in range(_REDIRECTS):
            proto = self._proto
            if proto is None or proto.lost is not None:
                proto = await self._connected()
            try:
                return await proto.request(request)
            except RedisReplyError as exc:
                moved = _moved_to(exc)
                if moved is None:
                    raise
                self._move(proto, moved)
        raise StoreUnavailable(f"redis: still redirected after {_REDIRECTS} tries")

    @property
    def address(self) -> tuple[str, int]:
        """Where calls go now: the URL's node, or the cluster node a MOVED named."""
        return self._host, self._port

    def _move(self, proto: _Protocol, address: tuple[str, int]) -> None:
        """Later calls go to `address`; the old connection closes once its pipelined calls
        have their (redirect) replies."""
        if (self._host, self._port) != address:
            self._host, self._port = address
        if self._proto is proto:
            self._proto = None
            proto.retire()

    async def _connected(self) -> _Protocol:
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            if self._proto is not None and self._proto.lost is None:
                return self._proto
            loop = asyncio.get_running_loop()
            try:
                async with asyncio.timeout(self._timeout):
                    _, fresh = await loop.create_connection(
                        lambda: _Protocol(self._timeout), self._host, self._port, ssl=self._ssl
                    )
                    await self._handshake(fresh)
            except TimeoutError as exc:
                self._host, self._port = self._seed
                raise StoreUnavailable(f"redis: no connection within {self._timeout:g}s") from exc
            except OSError as exc:
                self._host, self._port = self._seed
                raise StoreUnavailable(f"redis: {exc}") from exc
            self._proto = fresh
            return fresh

    async def _handshake(self, proto: _Protocol) -> None:
        commands: list[tuple[str | int, ...]] = []
        if self._password is not None:
            user = (self._user,) if self._user else ()
            commands.append(("AUTH", *user, self._password))
        if self._db:
            commands.append(("SELECT", self._db))
        for command in commands:
            try:
                await proto.request(encode(*command))
            except RedisReplyError as exc:
                failure = StoreUnavailable(f"redis: {command[0]!s} failed: {exc}")
                proto._fail(failure)
                raise failure from exc

    async def aclose(self) -> None:
        if self._proto is not None and self._proto.transport is not None:
            self._proto.transport.close()
        self._proto = None
