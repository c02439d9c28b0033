"""What every HTTP adapter does the same way: take a connection slot, send on the shared
transport, map transport failures to 502/504 at one place, read bodies, pick headers to relay."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx

from gateway.backends.errors import map_transport_error


async def open_response(
    transport: httpx.AsyncBaseTransport,
    request: httpx.Request,
    slots: asyncio.Semaphore,
    backend: str,
) -> httpx.Response:
    """The upstream's response head, holding one of `slots` until the body is done with."""
    await slots.acquire()
    try:
        return await transport.handle_async_request(request)
    except (TimeoutError, httpx.HTTPError, OSError) as exc:
        slots.release()
        raise map_transport_error(exc, backend) from exc
    except BaseException:
        slots.release()
        raise


async def read_and_release(
    response: httpx.Response, slots: asyncio.Semaphore, backend: str
) -> bytes:
    try:
        return await read_all(response)
    except (httpx.HTTPError, OSError) as exc:
        raise map_transport_error(exc, backend) from exc
    finally:
        await response.aclose()
        slots.release()


async def read_all(response: httpx.Response) -> bytes:
    """The body straight from the transport's stream: `aread` adds a decoder, a re-chunker and
    a context manager per chunk that an identity-encoded body does not need."""
    chunks = [chunk async for chunk in body_chunks(response)]
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def body_chunks(response: httpx.Response) -> AsyncIterator[bytes]:
    """Decoded body chunks: the raw stream when the upstream did not compress (we never ask it
    to), httpx's decoding iterator when it did anyway."""
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    stream = response.stream
    if encoding in ("", "identity") and isinstance(stream, httpx.AsyncByteStream):
        return stream.__aiter__()
    return response.aiter_bytes()


def relayed(headers: httpx.Headers, allowed: frozenset[bytes]) -> tuple[tuple[str, str], ...]:
    """Relay-worthy headers from the raw pairs: `items()` would decode every header first
    (httpx's Headers decoding: docs/benchmarks.md "Upstream transport")."""
    return tuple(
        (key.decode("latin-1").lower(), value.decode("latin-1"))
        for key, value in headers.raw
        if key.lower() in allowed
    )


async def probe(
    transport: httpx.AsyncBaseTransport,
    url: str,
    headers: httpx.Headers,
    wait: float,
    backend: str,
) -> tuple[int, bytes]:
    """A GET for health checks and load metrics: no connection slot (a full pool must not hide
    a healthy server), its own short timeout, the body read whole (they are small)."""
    request = httpx.Request(
        "GET", url, headers=headers, extensions={"timeout": httpx.Timeout(wait).as_dict()}
    )
    try:
        async with asyncio.timeout(wait):
            response = await transport.handle_async_request(request)
            try:
                return response.status_code, await read_all(response)
            finally:
                await response.aclose()
    except (TimeoutError, httpx.HTTPError, OSError) as exc:
        raise map_transport_error(exc, backend) from exc


def server_root(base_url: str) -> str:
    """`http://host:port` of a base URL (`http://host:port/v1` -> the server's own root, where
    engines serve /health and /metrics)."""
    url = httpx.URL(base_url)
    return f"{url.scheme}://{url.netloc.decode('ascii')}"
