"""A streamed answer on its way to the client: relayed event by event, and recorded exactly
once however it ends.

Its first block was read (and checked) before the reply started (backends/primed.py, in the
router's executor, where a bad one can still be retried elsewhere). A stream that stops
before its terminator (`[DONE]`, `message_stop`) has failed, whatever the transport said. A
stream that fails after bytes reached the client is recorded with the status the client saw
(200) and the error, and the tokens it relayed are billed (estimated where the upstream never
reported usage): the vendor bills them too.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Protocol

from gateway.backends.base import UpstreamStream
from gateway.call import Call, Decision, Outcome
from gateway.dialects.responses_stream import FINAL_EVENTS
from gateway.errors import TollgateError, UpstreamBadResponse
from gateway.policies.limit_headers import cost_comment

# The event that ends a stream in each dialect: the call is recorded just before it is sent.
_OPENAI_END = b"data: [DONE]\n\n"
_ANTHROPIC_END = b"event: message_stop"


def _openai_end(chunk: bytes) -> int:
    """Where the final event starts in this chunk (-1: not in it)."""
    return len(chunk) - len(_OPENAI_END) if chunk.endswith(_OPENAI_END) else -1


def _anthropic_end(chunk: bytes) -> int:
    return chunk.rfind(_ANTHROPIC_END, max(0, len(chunk) - 512))


def _responses_end(chunk: bytes) -> int:
    """The Responses API's last event: `response.completed` (or `.incomplete`, `.failed`),
    which carries the whole response, so it is looked for anywhere in the chunk."""
    if b"event: response." not in chunk:
        return -1
    found = [at for marker in FINAL_EVENTS if (at := chunk.rfind(marker)) >= 0]
    return max(found) if found else -1


class Finish(Protocol):
    """What a stream reports to when it is done (the pipeline's finisher)."""

    call: Call
    sealed: bool

    def seal(self) -> None: ...

    async def __call__(self) -> None: ...


class StreamReply:
    """Relays upstream events; `close()` (always called by the API) settles usage and records.

    The call is recorded (journaled) just before the stream's final event goes out, or at
    `close()` for a stream that ends any other way, so it is never recorded after the client
    has seen its last byte."""

    def __init__(
        self, upstream: UpstreamStream, outcome: Outcome, finish: Finish, deadline: float
    ) -> None:
        self._upstream = upstream
        self._outcome = outcome
        self._finish = finish
        self.deadline = deadline
        call = finish.call
        self._kept: list[bytes] | None = (
            [] if call.capture != "none" or call.keep_response else None
        )
        self._relayed = False
        # Called with the chunk holding the final event, after the call is recorded and
        # before the client has it (the Responses API stores the response there).
        self.on_final: Callable[[bytes], Awaitable[None]] | None = None

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._relay()

    async def _relay(self) -> AsyncIterator[bytes]:
        call = self._finish.call
        end_of = (
            _responses_end
            if call.endpoint == "responses"
            else _anthropic_end
            if call.dialect == "anthropic"
            else _openai_end
        )
        kept = self._kept
        async for chunk in self._upstream:
            if kept is not None:
                kept.append(chunk)
            end = end_of(chunk)
            if end >= 0:
                self._seal()
                # What the call cost, just before its final event: the app can log it.
                chunk = chunk[:end] + cost_comment(self._outcome.money) + chunk[end:]
                if self.on_final is not None:
                    await self.on_final(chunk)
            self._relayed = True
            yield chunk
        if not self._finish.sealed:
            raise UpstreamBadResponse(
                "The upstream's stream ended before it was complete.",
                detail="stream ended without its final event",
            )

    def _seal(self) -> None:
        if self._finish.sealed:
            return
        self._outcome.usage = self._upstream.usage()
        self._outcome.meta = self._upstream.meta()
        if self._kept is not None:
            self._outcome.response_body = b"".join(self._kept)
        self._finish.seal()

    async def close(
        self, *, disconnected: bool = False, error: TollgateError | None = None
    ) -> None:
        outcome = self._outcome
        try:
            await self._upstream.aclose()
        finally:
            if not self._finish.sealed:
                outcome.disconnected = disconnected
                if disconnected:
                    outcome.error_type = "client_disconnected"
                elif error is not None:
                    self._failed(error)
                self._seal()
            await self._finish()

    def _failed(self, error: TollgateError) -> None:
        """Before any byte reached the client the call is that error; after, the client saw a
        200 and then the error: recorded as such, and what was relayed is billed."""
        outcome = self._outcome
        outcome.error_type = error.code or error.error_type
        if self._relayed:
            outcome.kind = "upstream_error"
            outcome.partial = True
        else:
            outcome.status = error.status
        if error.detail is not None:
            self._finish.call.decide(Decision("gateway", "note", error.detail))
