"""The shape every dialect's proxied endpoint shares: one request id, the runtime of the
moment, the call through the pipeline, the reply or stream out, and errors in the dialect.

A dialect supplies how to turn HTTP into a Call (`prepare`) and how its errors look."""

from __future__ import annotations

import asyncio
import logging

from starlette.types import Receive, Scope, Send

from gateway.api.asgi import (
    ClientWatch,
    ErrorEvent,
    RequestHeaders,
    raw_headers,
    read_body,
    send_stream,
    send_whole,
)
from gateway.call import Call, Dialect, Endpoint, Principal
from gateway.errors import InternalError, TollgateError
from gateway.logs import request_id_var
from gateway.pipeline import Reply
from gateway.runtime import Runtime
from gateway.services import Services

log = logging.getLogger("gateway.api")
DISCONNECT_GRACE_S = 0.25


class DialectEndpoint:
    error_event: ErrorEvent
    dialect: Dialect
    endpoint: Endpoint

    def key_of(self, headers: RequestHeaders) -> str | None:
        """The client's key as this dialect's clients send it."""
        return headers.bearer()

    def authenticate(self, runtime: Runtime, headers: RequestHeaders) -> Principal:
        return runtime.auth.authenticate(self.key_of(headers))

    def build(
        self,
        raw: bytes,
        principal: Principal,
        request_id: str,
        scope: Scope,
        headers: RequestHeaders,
        runtime: Runtime,
    ) -> Call:
        """The call to run, from the body the client sent (a TollgateError if it is bad)."""
        raise NotImplementedError

    async def before(self, call: Call, services: Services, runtime: Runtime) -> None:
        """Work the call needs before the pipeline that may wait on I/O (a stored
        conversation); a TollgateError here refuses the call, recorded as rejected."""

    async def after(self, reply: Reply, call: Call, services: Services, runtime: Runtime) -> None:
        """Work on the pipeline's reply before it is sent (storing a response)."""

    def _record_rejected(
        self,
        services: Services,
        runtime: Runtime,
        err: TollgateError,
        request_id: str,
        scope: Scope,
        principal: Principal | None,
    ) -> None:
        client = scope.get("client")
        headers = RequestHeaders(scope)
        services.pipeline.rejected(
            err,
            runtime,
            (request_id, self.dialect, self.endpoint),
            (client[0] if client else None, headers.user_agent),
            headers.traceparent,
            principal,
        )

    def id_headers(self, request_id: str) -> list[tuple[bytes, bytes]]:
        return [(b"x-tollgate-request-id", request_id.encode())]

    async def send_error(self, send: Send, err: TollgateError, request_id: str) -> None:
        raise NotImplementedError

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        services: Services = scope["state"]["services"]
        request_id = services.request_ids()
        token = request_id_var.set(request_id)
        watch: ClientWatch | None = None
        runtime = services.runtime.current  # the call finishes on the config it started on
        runtime.calls.enter()  # ...which is not closed until it has (reload.py)
        call: Call | None = None
        principal: Principal | None = None  # known once the key is: a later refusal is its
        try:
            headers = RequestHeaders(scope)
            principal = self.authenticate(runtime, headers)
            server = runtime.config.server
            raw = await read_body(
                receive, server.max_body_bytes, headers.content_length, server.body_timeout_seconds
            )
            built = self.build(raw, principal, request_id, scope, headers, runtime)
            await self.before(built, services, runtime)
            call = built
            watch = ClientWatch(receive, DISCONNECT_GRACE_S)
            reply = await services.pipeline.handle(call, runtime)
            await self.after(reply, call, services, runtime)
            out = raw_headers(reply.headers)
            out.extend(self.id_headers(request_id))
            if reply.stream is not None:
                await send_stream(send, watch, reply, out, self.error_event)
            else:
                watch.stop()
                reply.seal()
                out.extend(raw_headers(reply.sealed_headers()))
                try:
                    await send_whole(send, reply.status, out, reply.body)
                finally:
                    await reply.done()
        except TollgateError as err:
            if call is None:
                self._record_rejected(services, runtime, err, request_id, scope, principal)
            await self.send_error(send, err, request_id)
        except asyncio.CancelledError:
            if watch is None or watch.reason is None:
                raise
            log.info("client disconnected before the response was sent")
        except Exception:
            log.exception("unhandled error")
            await self.send_error(send, InternalError("Internal error in the gateway."), request_id)
        finally:
            if watch is not None:
                watch.stop()
            runtime.calls.leave()
            request_id_var.reset(token)
