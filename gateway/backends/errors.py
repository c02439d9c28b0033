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
    """The cause decides: transports wrap each other's exceptions (aiohttp inside httpx).
    The client's message names no backend, host or port; `detail` (log, audit) does."""
    cause = exc.__cause__ if isinstance(exc, httpx.HTTPError) and exc.__cause__ else exc
    if isinstance(cause, aiohttp.ClientConnectorError):
        return UpstreamUnavailable(
            UNREACHABLE, detail=f"backend {backend} is unreachable: {cause.os_error}"
        )
    # Before timeouts: a dropped connection must read as "closed", whatever wraps it.
    if isinstance(cause, _CLOSED):
        return UpstreamUnavailable(
            "The upstream serving this model closed the connection.",
            detail=f"backend {backend} closed the connection ({type(cause).__name__})",
        )
    if isinstance(cause, _TIMEOUTS) or isinstance(exc, _TIMEOUTS):
        return UpstreamTimeout(
            "The upstream serving this model did not answer in time.",
            detail=f"backend {backend} timed out ({type(cause).__name__})",
        )
    if isinstance(exc, httpx.ConnectError | OSError):
        return UpstreamUnavailable(UNREACHABLE, detail=f"backend {backend} is unreachable: {exc}")
    return UpstreamUnavailable(
        "The upstream serving this model failed.",
        detail=f"backend {backend} failed: {type(cause).__name__}: {cause}",
    )


UNREACHABLE = "The upstream serving this model is unreachable."
