"""Connections that cannot be held open for free: a client must finish its request headers
within `server.header_timeout_seconds` of connecting (or of its previous response), whether
it sends nothing, or a byte a minute (slowloris). uvicorn times out idle keep-alive
connections only after a first request, and never times out headers; a gateway in front of a
whole organisation cannot let a few thousand sockets sit on it.

The body is bounded separately, per read, in the ASGI layer (`api/asgi.py: read_body`).
"""

from __future__ import annotations

import asyncio
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class GuardedConfig(uvicorn.Config):
    """uvicorn's Config plus the headers deadline (a module-level class: worker processes
    receive it pickled)."""

    def __init__(self, app: Any, *, header_timeout: float = 10.0, **options: Any) -> None:
        super().__init__(app, **options)
        self.header_timeout = header_timeout


class GuardedHttpTools(HttpToolsProtocol):
    """uvicorn's httptools protocol with a deadline for each request's headers."""

    _headers_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._header_timeout = float(getattr(self.config, "header_timeout", 10.0))
        self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm()  # the next request's headers, on a kept-alive connection

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        self._headers_deadline = self.loop.call_later(self._header_timeout, self._expire)

    def _disarm(self) -> None:
        if self._headers_deadline is not None:
            self._headers_deadline.cancel()
            self._headers_deadline = None

    def _expire(self) -> None:
        self._headers_deadline = None
        idle = self.cycle is None or self.cycle.response_complete
        if idle and not self.transport.is_closing():
            self.transport.close()


def server_options(config: Any) -> dict[str, Any]:
    """uvicorn options from `server:`: keep-alive, the headers deadline, which proxies may
    say who the client is (X-Forwarded-For is believed only from them)."""
    server = config.server
    trusted = list(server.trusted_proxies)
    return {
        "http": GuardedHttpTools,
        "header_timeout": server.header_timeout_seconds,
        "timeout_keep_alive": server.keepalive_seconds,
        "proxy_headers": bool(trusted),
        "forwarded_allow_ips": ",".join(trusted) if trusted else "",
    }
