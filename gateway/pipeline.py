"""Runs one Call down the flow: model check -> policies -> routing -> backend -> sinks.

Dialect-free: the API layer turns HTTP into a Call and a Reply (or a TollgateError) back into
HTTP. Every call, whatever its outcome, ends in exactly one CallRecord.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import orjson

from gateway.accounting.tokens import TokenCounter
from gateway.backends import bridge
from gateway.backends.base import UpstreamRequest, UpstreamResponse, UpstreamStream
from gateway.call import Answer, Call, CallRecord, Deny, Outcome
from gateway.config.runtime import Runtime
from gateway.errors import ModelNotFound, PolicyDenied, TollgateError, UpstreamTimeout
from gateway.sinks.fanout import SinkFanout


async def _nothing() -> None:
    return None


@dataclass(slots=True)
class Reply:
    """A response ready for the wire: a whole body, or a stream the API must `close()`.

    For a whole body the API awaits `done()` once it has been sent: recording the call (policy
    response hooks, the CallRecord) then happens after the client has its answer, not before.
    """

    status: int
    headers: list[tuple[str, str]]
    body: bytes = b""
    stream: StreamReply | None = None
    done: Callable[[], Awaitable[None]] = field(default=_nothing)


@dataclass(slots=True)
class _Finisher:
    call: Call
    outcome: Outcome
    runtime: Runtime
    sinks: SinkFanout
    ran: int
    done: bool = field(default=False)

    async def __call__(self) -> None:
        if self.done:
            return
        self.done = True
        self.outcome.completed_at = time.time()
        await self.runtime.chain.on_response(self.call, self.outcome, self.ran)
        self.sinks.submit(CallRecord.of(self.call, self.outcome))


class Pipeline:
    def __init__(self, sinks: SinkFanout, tokens: TokenCounter) -> None:
        self._sinks = sinks
        self._tokens = tokens

    async def handle(self, call: Call, runtime: Runtime) -> Reply:
        """Raises TollgateError for anything the client should see as an error (after recording)."""
        outcome = Outcome()
        finish = _Finisher(call, outcome, runtime, self._sinks, ran=0)
        try:
            reply = await self._run(call, runtime, outcome, finish)
        except TollgateError as err:
            outcome.status = err.status
            outcome.error_type = err.error_type
            await finish()
            raise
        except asyncio.CancelledError:
            # The client went away (or the server is stopping): record it, then unwind.
            outcome.status = 499
            outcome.error_type = "client_disconnected"
            outcome.disconnected = True
            await finish()
            raise
        except Exception:
            outcome.status = 500
            outcome.error_type = "internal_error"
            await finish()
            raise
        if reply.stream is None:
            reply.done = finish
        return reply

    async def _run(
        self, call: Call, runtime: Runtime, outcome: Outcome, finish: _Finisher
    ) -> Reply:
        if call.model not in runtime.router or not call.principal.may_use(call.model):
            raise _model_not_found(call, runtime)
        verdict, finish.ran = await runtime.chain.on_request(call)
        if verdict is not None:
            return _verdict_reply(verdict, outcome)
        targets = call.route.targets if call.route else runtime.router.targets(call.model)
        target = targets[0]
        backend = runtime.backends[target.backend]
        outcome.target = target
        request = UpstreamRequest(
            call.endpoint,
            target.model,
            call.body,
            call.stream,
            call.client_wants_usage,
            call.request_id,
            dict(call.forward) if call.forward else {},
            call.dialect,
        )
        deadline = asyncio.get_running_loop().time() + backend.total_timeout
        try:
            async with asyncio.timeout_at(deadline):
                response = await bridge.send(backend, request, self._tokens)
        except TimeoutError as exc:
            raise UpstreamTimeout(
                f"backend {target.backend} did not answer within {backend.total_timeout:g}s"
            ) from exc
        outcome.status = response.status
        outcome.first_byte_at = time.time()
        headers = [
            *response.headers,
            ("x-tollgate-backend", target.backend),
            ("x-tollgate-cache", "miss"),
        ]
        if target.tier:
            headers.append(("x-tollgate-tier", target.tier))
        if response.stream is None:
            return self._whole(response, outcome, headers)
        return Reply(
            response.status, headers, stream=StreamReply(response.stream, outcome, finish, deadline)
        )

    @staticmethod
    def _whole(
        response: UpstreamResponse, outcome: Outcome, headers: list[tuple[str, str]]
    ) -> Reply:
        if response.status >= 400:
            outcome.error_type = "upstream_error"
        outcome.usage = response.usage
        return Reply(response.status, headers, response.body)


class StreamReply:
    """Relays upstream events; `close()` (always called by the API) settles usage and records."""

    def __init__(
        self, upstream: UpstreamStream, outcome: Outcome, finish: _Finisher, deadline: float
    ) -> None:
        self._upstream = upstream
        self._outcome = outcome
        self._finish = finish
        self.deadline = deadline

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._upstream.__aiter__()

    async def close(
        self, *, disconnected: bool = False, error: TollgateError | None = None
    ) -> None:
        outcome = self._outcome
        try:
            await self._upstream.aclose()
        finally:
            outcome.usage = self._upstream.usage()
            outcome.disconnected = disconnected
            if disconnected:
                outcome.error_type = "client_disconnected"
            elif error is not None:
                outcome.status, outcome.error_type = error.status, error.error_type
            await self._finish()


def _verdict_reply(verdict: Deny | Answer, outcome: Outcome) -> Reply:
    """A policy stopped the call: its refusal raised, or its answer (a cache hit) as the reply."""
    if isinstance(verdict, Deny):
        denied = PolicyDenied(
            verdict.message, status=verdict.status, code=verdict.code, headers=verdict.headers
        )
        denied.error_type = verdict.error_type
        raise denied
    outcome.status, outcome.cache = 200, verdict.cache
    outcome.first_byte_at = time.time()
    return Reply(
        200,
        [("content-type", "application/json"), ("x-tollgate-cache", verdict.cache)],
        orjson.dumps(verdict.body),
    )


def _model_not_found(call: Call, runtime: Runtime) -> ModelNotFound:
    allowed = [a for a in runtime.router.aliases() if call.principal.may_use(a)]
    listing = ", ".join(allowed) if allowed else "none"
    return ModelNotFound(
        f"The model '{call.model}' does not exist or you do not have access to it. "
        f"Available models: {listing}.",
        param="model",
    )
