"""Foreign transport exceptions mapped into Tollgate's error tree, at one boundary."""

from __future__ import annotations

import asyncio

import aiohttp
import httpx

from gateway.errors import TollgateError, UpstreamTimeout, UpstreamUnavailable

_TIMEOUTS = (
    asyncio.TimeoutError,
    httpx.TimeoutException,
    aiohttp.ServerTimeoutError,
)
_CLOSED = (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError, httpx.RemoteProtocolError)


def map_transport_error(exc: BaseException, backend: str) -> TollgateError:
    """The cause decides: transports wrap each other's exceptions (aiohttp inside httpx)."""
    cause = exc.__cause__ if isinstance(exc, httpx.HTTPError) and exc.__cause__ else exc
    if isinstance(cause, aiohttp.ClientConnectorError):
        return UpstreamUnavailable(f"backend {backend} is unreachable: {cause.os_error}")
    # Before timeouts: a dropped connection must read as "closed", whatever wraps it.
    if isinstance(cause, _CLOSED):
        return UpstreamUnavailable(f"backend {backend} closed the connection")
    if isinstance(cause, _TIMEOUTS) or isinstance(exc, _TIMEOUTS):
        return UpstreamTimeout(f"backend {backend} did not answer in time")
    if isinstance(exc, httpx.ConnectError | OSError):
        return UpstreamUnavailable(f"backend {backend} is unreachable: {exc}")
    return UpstreamUnavailable(f"backend {backend} failed: {type(cause).__name__}")
