"""Runs one Call down the flow: model check -> policies -> routing -> backend -> sinks.

Dialect-free: the API layer turns HTTP into a Call and a Reply (or a TollgateError) back into
HTTP. Every call, whatever its outcome, ends in exactly one CallRecord.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import orjson

from gateway.accounting.tokens import anthropic_prompt_tokens
from gateway.backends.base import UpstreamResponse
from gateway.cache import replay
from gateway.cache.entry import Entry
from gateway.cache.replay import ReplayStream
from gateway.call import (
    NOTICE,
    Answer,
    Call,
    Decision,
    Deny,
    Dialect,
    Endpoint,
    Outcome,
    Principal,
    Target,
)
from gateway.errors import (
    ModelNotFound,
    PolicyDenied,
    ServiceUnavailable,
    TollgateError,
)
from gateway.policies.limit_headers import cost_headers, limit_headers
from gateway.recorder import Recorder
from gateway.relay import StreamReply
from gateway.routing.executor import Executor
from gateway.routing.flex import flex_wait, wait_for_room
from gateway.runtime import Runtime
from gateway.telemetry.context import TraceStarter

log = logging.getLogger("gateway.pipeline")
_REPLAY_SECONDS = 60.0  # a replayed stream is one write; this only bounds a stalled client


async def _nothing() -> None:
    return None


def _nothing_now() -> None:
    return None


def _no_headers() -> list[tuple[str, str]]:
    return []


@dataclass(slots=True)
class Reply:
    """A response ready for the wire: a whole body, or a stream the API must `close()`.

    For a whole body the API calls `seal()` just before sending it (the call's record is then
    in the audit journal before the client has its answer), adds `sealed_headers()` (what the
    call cost, what its budgets have left: known once recorded) and awaits `done()` once it has
    been sent: policy response hooks (settling budgets) run after the client is answered.
    """

    status: int
    headers: list[tuple[str, str]]
    body: bytes = b""
    stream: StreamReply | None = None
    seal: Callable[[], None] = field(default=_nothing_now)
    done: Callable[[], Awaitable[None]] = field(default=_nothing)
    sealed_headers: Callable[[], list[tuple[str, str]]] = field(default=_no_headers)


@dataclass(slots=True)
class _Finisher:
    call: Call
    outcome: Outcome
    runtime: Runtime
    recorder: Recorder
    ran: int
    sealed: bool = field(default=False)
    done: bool = field(default=False)

    def seal(self) -> None:
        """Records the call (once); from here on the record no longer changes."""
        if not self.sealed:
            self.sealed = True
            self.recorder.record(self.call, self.outcome, self.runtime)

    def told(self) -> list[tuple[str, str]]:
        """A whole body's cost and limit headers, from its record (call after `seal`)."""
        money = self.outcome.money
        return cost_headers(money) + limit_headers(self.call, money.cost)

    async def __call__(self) -> None:
        if self.done:
            return
        self.done = True
        self.seal()
        await self.runtime.chain.on_response(self.call, self.outcome, self.ran)
        try:
            await self.runtime.cache.store(self.call, self.outcome)
        except Exception:  # a cache that cannot keep an answer costs a future hit, nothing else
            log.exception("storing call %s in the cache failed", self.call.request_id)


class Pipeline:
    """One call end to end, the same for every endpoint and both dialects: policies decide,
    the cache may answer, the router picks a replica and the executor tries it (and the next),
    and the finisher settles the budget, stores the answer and records the call exactly once,
    whatever happened. Long-lived (one per process); what a config decides comes in with each
    call's `Runtime`, so a reload never changes a call half-way."""

    def __init__(self, recorder: Recorder, tracing: TraceStarter | None = None) -> None:
        self.recorder = recorder
        self._tokens = recorder.tokens
        self._tracing = tracing
        self._executor = Executor(recorder.tokens)

    def rejected(
        self,
        err: TollgateError,
        runtime: Runtime,
        request: tuple[str, Dialect, Endpoint],
        client: tuple[str | None, str | None],
        traceparent: str | None = None,
        principal: Principal | None = None,
    ) -> None:
        """Records a request refused before it became a Call (bad key, bad JSON, too large),
        against its key when that was known; its span joins the client's trace when it sent
        one."""
        request_id, dialect, endpoint = request
        call = Call(request_id, dialect, endpoint, "", {}, False, False)
        if principal is not None:
            call.principal = principal
        call.client_ip, call.user_agent = client
        call.traceparent = traceparent
        outcome = Outcome(status=err.status, error_type=err.error_type, kind="rejected")
        self.recorder.record(call, outcome, runtime)

    async def handle(self, call: Call, runtime: Runtime) -> Reply:
        """Raises TollgateError for anything the client should see as an error (after recording)."""
        outcome = Outcome()
        journal = self.recorder.journal
        if journal is not None and not journal.accepting:
            raise ServiceUnavailable(
                "The audit journal is full (the audit database has been unreachable too long);"
                " calls are refused rather than served unrecorded.",
                code="audit_unavailable",
                headers={"retry-after": "5"},
            )
        finish = _Finisher(call, outcome, runtime, self.recorder, ran=0)
        try:
            reply = await self._run(call, runtime, outcome, finish)
        except TollgateError as err:
            outcome.status = err.status
            # An upstream's failure is recorded by what it was (upstream_timeout, ...).
            outcome.error_type = (err.code or err.error_type) if outcome.target else err.error_type
            err.headers.update(limit_headers(call))
            if err.detail is not None:
                call.decide(Decision("gateway", "note", runtime.scrub(err.detail)))
                log.warning("call failed: %s", runtime.scrub(err.detail))
            await finish()
            err.headers.update(cost_headers(outcome.money))  # recorded: what it cost is known
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
            reply.seal = finish.seal
            reply.done = finish
            reply.sealed_headers = finish.told
        else:
            reply.headers.extend(limit_headers(call))
        return reply

    async def _run(
        self, call: Call, runtime: Runtime, outcome: Outcome, finish: _Finisher
    ) -> Reply:
        tracing = self._tracing
        if tracing is not None:
            call.trace = tracing.start(call.traceparent, call.tracestate)
        if call.model not in runtime.router or not call.principal.may_use(call.model):
            outcome.kind = "rejected"
            raise _model_not_found(call, runtime)
        if len(runtime.chain):
            started = time.time()
            try:
                verdict, finish.ran = await runtime.chain.on_request(call)
            finally:  # a policy that raised was evaluated too
                outcome.policies_at = (started, time.time())
            if verdict is not None:
                return _verdict_reply(verdict, outcome, call)
        if call.endpoint == "count_tokens":
            first = runtime.router.configured(call.model)[0]
            if not runtime.backends[first.backend].capabilities.count_tokens:
                return self._counted(call, outcome)  # only Anthropic counts for itself
        started = time.time()
        entry = await runtime.cache.lookup(call, outcome, runtime.router)
        if outcome.cache != "bypass":
            call.lookups = [*(call.lookups or ()), ("cache", started, time.time())]
        if entry is not None:
            return _replayed(entry, call, outcome, finish)
        settings = runtime.config.batch
        wait = flex_wait(call, settings.flex_max_wait_seconds)
        if wait is not None:
            await _flexed(call, runtime, wait, settings.spare_below)
        sent = dict(call.forward) if call.forward else {}
        if call.trace is not None:
            sent["traceparent"] = TraceStarter.header(call.trace)
            if call.trace.tracestate:
                sent["tracestate"] = call.trace.tracestate
        outcome.upstream_at = time.time()
        attempts = outcome.attempts
        try:
            served = await self._executor.run(
                call, runtime.router, runtime.backends, runtime.scrub, sent, attempts
            )
        except BaseException:
            if attempts:  # a failure is recorded against the replica that gave it
                last = attempts[-1]
                outcome.target = Target(last.backend, last.model, last.tier)
            raise
        response, replica = served.response, served.attempt.replica
        outcome.target = replica.target
        outcome.status = response.status
        outcome.first_byte_at = time.time()
        headers = [
            *response.headers,
            ("x-tollgate-backend", replica.backend),
            ("x-tollgate-tier", replica.tier),
            ("x-tollgate-cache", outcome.cache),
            *notices(call),
        ]
        if len(attempts) > 1:
            headers.append(("x-tollgate-attempts", str(len(attempts))))
        if response.stream is None:
            return self._whole(response, outcome, headers, call)
        stream = StreamReply(response.stream, outcome, finish, served.deadline)
        return Reply(response.status, headers, stream=stream)

    def _counted(self, call: Call, outcome: Outcome) -> Reply:
        """`count_tokens` for a model no Anthropic backend serves: Tollgate's own count (what
        the upstream that bills will see is its own tokenizer's business)."""
        count = anthropic_prompt_tokens(call.body, self._tokens)
        tools = call.body.get("tools")
        if tools:
            count += self._tokens.count(orjson.dumps(tools).decode())
        outcome.status = 200
        outcome.first_byte_at = time.time()
        body = orjson.dumps({"input_tokens": count})
        return Reply(200, [("content-type", "application/json")], body)

    @staticmethod
    def _whole(
        response: UpstreamResponse, outcome: Outcome, headers: list[tuple[str, str]], call: Call
    ) -> Reply:
        outcome.usage, outcome.meta = response.usage, response.meta
        if call.capture != "none" or call.keep_response:
            outcome.response_body = response.body
        return Reply(response.status, headers, response.body)


async def _flexed(call: Call, runtime: Runtime, most_s: float, below: int) -> None:
    """A call that can wait waits for spare capacity (bounded), then goes on as any call."""
    if call.body.get("service_tier") == "flex":
        del call.body["service_tier"]  # Tollgate's own wait, not the upstream's tier
    waited, room = await wait_for_room(runtime.router, call.model, below, most_s)
    how = "found spare capacity" if room else f"reached its {most_s:g} s bound; served now"
    call.decide(Decision("flex", "note", f"flex: waited {waited:.2f} s, {how}"))


def _verdict_reply(verdict: Deny | Answer, outcome: Outcome, call: Call) -> Reply:
    """A policy stopped the call: its refusal raised, or its answer (a cache hit) as the reply."""
    if isinstance(verdict, Deny):
        denied = PolicyDenied(
            verdict.message, status=verdict.status, code=verdict.code, headers=verdict.headers
        )
        denied.error_type = verdict.error_type
        outcome.kind = "denied"
        raise denied
    outcome.status, outcome.cache, outcome.usage = 200, verdict.cache, verdict.usage
    outcome.first_byte_at = time.time()
    body = orjson.dumps(verdict.body)
    if call.capture != "none":
        outcome.response_body = body
    return Reply(
        200, [("content-type", "application/json"), ("x-tollgate-cache", verdict.cache)], body
    )


def _replayed(entry: Entry, call: Call, outcome: Outcome, finish: _Finisher) -> Reply:
    """A cache hit, in the client's dialect, whole or streamed; recorded as a live answer is."""
    outcome.status, outcome.usage = 200, entry.usage
    outcome.first_byte_at = time.time()
    headers = [("x-tollgate-cache", outcome.cache), *notices(call)]
    if call.stream:
        deadline = asyncio.get_running_loop().time() + _REPLAY_SECONDS
        stream = StreamReply(ReplayStream(entry, call), outcome, finish, deadline)
        return Reply(200, [("content-type", "text/event-stream"), *headers], stream=stream)
    body = replay.whole(entry, call)
    if call.capture != "none":
        outcome.response_body = body
    return Reply(200, [("content-type", "application/json"), *headers], body)


def notices(call: Call) -> list[tuple[str, str]]:
    """What policies asked to tell the client (`notice.*` labels) as x-tollgate-* headers."""
    if not call.labels:
        return []
    size = len(NOTICE)
    return [("x-tollgate-" + k[size:], v) for k, v in call.labels.items() if k.startswith(NOTICE)]


def _model_not_found(call: Call, runtime: Runtime) -> ModelNotFound:
    allowed = [a for a in runtime.router.aliases() if call.principal.may_use(a)]
    listing = ", ".join(allowed) if allowed else "none"
    return ModelNotFound(
        f"The model '{call.model}' does not exist or you do not have access to it. "
        f"Available models: {listing}.",
        param="model",
    )
