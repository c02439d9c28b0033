"""Runs a call's plan: one attempt after another until one answers, within the call's deadline.

Only failures that are safe to retry are retried: no connection, a timeout before the first
byte, 429 and 502/503/504. Never a 4xx about the request, never a 500 or an answer that is not
the API's (the upstream may have acted on it, and billed it), and never once a byte has reached
the client (a stream is retried only while its first block is still being read). Between attempts
a jittered exponential back-off, never past the deadline. A replica's failures feed its
circuit (an upstream `retry-after` sets its cooldown); the in-flight count is taken before
dispatch and given back when the replica is done with the call (a stream: when it closes).

Exhausted, the client gets the one attempt's error when there was one, the upstream's 429
(with the shortest retry-after) when every attempt was rate limited, and a 503 otherwise.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass

from gateway.accounting.tokens import TokenCounter, prompt_tokens
from gateway.backends import bridge
from gateway.backends.base import Backend, UpstreamRequest, UpstreamResponse, UpstreamStream
from gateway.backends.primed import Primed
from gateway.backends.scrub import Scrubber
from gateway.backends.upstream_errors import upstream_error
from gateway.call import AttemptRecord, Call, ResponseMeta, Usage
from gateway.errors import (
    ServiceUnavailable,
    TollgateError,
    UpstreamBadResponse,
    UpstreamRateLimited,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from gateway.routing.router import Attempt, Router
from gateway.routing.state import ReplicaState
from gateway.routing.table import RetryPolicy
from gateway.tenancy import tenant_key

log = logging.getLogger("gateway.routing")

RETRYABLE_STATUS = frozenset({429, 502, 503, 504})
# Failures after which the upstream has (likely) read and processed the prompt: billed.
_CONSUMED = (UpstreamTimeout,)


@dataclass(slots=True)
class Served:
    """The attempt that answered and its response (a stream already primed)."""

    attempt: Attempt
    response: UpstreamResponse
    deadline: float  # loop time: what is left of the call's budget bounds its stream
    record: AttemptRecord


class Executor:
    def __init__(self, tokens: TokenCounter, rng: random.Random | None = None) -> None:
        self._tokens = tokens
        self._rng = rng or random.Random()

    async def run(
        self,
        call: Call,
        router: Router,
        backends: Mapping[str, Backend],
        scrub: Scrubber,
        headers: dict[str, str],
        records: list[AttemptRecord],
    ) -> Served:
        """The served attempt; every try is appended to `records` as it ends (so a failure
        that escapes still leaves them for the call's record)."""
        loop = asyncio.get_running_loop()
        route = router.table[_alias(call)]
        retry = route.retry
        call.kv_salt = kv_salt(call, route.kv_isolation)
        deadline: float | None = None
        failures: list[TollgateError] = []
        while len(records) < retry.attempts:
            progressed = False
            for attempt in router.plan(call.model, call.route, call):
                if len(records) >= retry.attempts:
                    break
                backend = backends[attempt.replica.backend]
                if call.endpoint == "count_tokens" and not backend.capabilities.count_tokens:
                    continue  # a fallback that cannot count is no place to count
                if deadline is None:
                    deadline = loop.time() + router.budget(call.model, call.route)
                elif not await self._back_off(len(records), retry, deadline, loop):
                    self._exhausted(call, failures, router, len(records))
                progressed = True
                outcome = await self._try(call, attempt, backend, scrub, headers, deadline)
                if isinstance(outcome, Served):
                    records.append(outcome.record)
                    if attempt.why.startswith("fallback"):
                        attempt.state.stats.fallbacks += 1
                    return outcome
                records.append(outcome.record)
                failures.append(outcome.err)
                if not outcome.retryable:
                    raise outcome.err
            if not progressed:
                break
        self._exhausted(call, failures, router, len(records))
        raise AssertionError("unreachable")  # _exhausted always raises

    async def _back_off(
        self, tried: int, retry: RetryPolicy, deadline: float, loop: asyncio.AbstractEventLoop
    ) -> bool:
        """A jittered exponential pause before the next attempt; False if the deadline would
        pass during it (then no more attempts are made)."""
        base, ceiling = retry.backoff_ms / 1000, retry.max_backoff_ms / 1000
        pause = min(ceiling, base * 2 ** (tried - 1)) * (0.5 + self._rng.random() / 2)
        if loop.time() + pause >= deadline:
            return False
        if pause > 0:
            await asyncio.sleep(pause)
        return True

    async def _try(
        self,
        call: Call,
        attempt: Attempt,
        backend: Backend,
        scrub: Scrubber,
        headers: dict[str, str],
        deadline: float,
    ) -> Served | _Failure:
        replica, state = attempt.replica, attempt.state
        span_id = self._rng.getrandbits(64) or 1
        sent = _with_parent(headers, span_id)
        body = call.body
        if call.kv_salt is not None and backend.capabilities.cache_salt:
            body = {**body, "cache_salt": call.kv_salt}  # the tenant's, whatever a client sent
        request = UpstreamRequest(
            call.endpoint, replica.model, body, call.stream, call.client_wants_usage,
            call.request_id, sent, call.dialect, call.prompt_cache,
        )  # fmt: skip
        loop = asyncio.get_running_loop()
        started, wall = loop.time(), time.time()
        state.enter()
        err: TollgateError
        response: UpstreamResponse | None = None
        try:
            async with asyncio.timeout_at(min(deadline, started + backend.total_timeout)):
                response = await bridge.send(backend, request, self._tokens)
                if response.stream is not None and response.status < 400:
                    primed = await Primed.start(response.stream, call.dialect)
                    response.stream = Tracked(primed, state)
        except TimeoutError:
            err = UpstreamTimeout(
                "The upstream serving this model did not answer in time.",
                detail=f"backend {replica.backend}: no answer within the deadline",
            )
        except (UpstreamUnavailable, UpstreamTimeout) as exc:
            err = exc
        except BaseException:
            state.leave()
            raise
        else:
            assert response is not None
            elapsed = (loop.time() - started) * 1000
            if response.status < 400:
                if response.stream is None:
                    state.leave()
                    state.succeeded(latency_ms=elapsed)
                else:
                    state.succeeded(ttft_ms=elapsed)
                record = AttemptRecord(replica.backend, replica.model, replica.tier,
                                       response.status, None, elapsed, span_id, wall)  # fmt: skip
                return Served(attempt, response, deadline, record)
            err = upstream_error(response, scrub)
        state.leave()
        status = response.status if response is not None else 0
        retryable = (
            isinstance(err, UpstreamTimeout)
            # No HTTP answer (not connected, or closed before one): not a garbage answer, which
            # the upstream may have acted on and billed.
            or (type(err) is UpstreamUnavailable and status == 0)
            or status in RETRYABLE_STATUS
        )
        faulty = isinstance(err, UpstreamBadResponse) or status >= 500 or status in (401, 403)
        if retryable or faulty:  # the replica's own fault
            state.failed(_said_retry_after(response), status == 429)
        if retryable:
            state.stats.retries += 1
        consumed = None
        if isinstance(err, _CONSUMED):  # the upstream had the prompt: it billed for it
            consumed = Usage(prompt_tokens(call.endpoint, call.body, self._tokens), estimated=True)
        elapsed = (loop.time() - started) * 1000
        error = err.code or err.error_type
        detail = scrub(err.detail or err.message)
        record = AttemptRecord(
            replica.backend, replica.model, replica.tier, status, error, elapsed, span_id, wall,
            consumed, detail,
        )  # fmt: skip
        if retryable:
            log.info("call %s: try on backend %s failed, retrying: %s", call.request_id,
                     replica.backend, detail)  # fmt: skip
        return _Failure(err, retryable, record)

    def _exhausted(
        self, call: Call, failures: list[TollgateError], router: Router, tried: int
    ) -> None:
        if len(failures) == 1:
            raise failures[0]
        if failures and all(isinstance(f, UpstreamRateLimited) for f in failures):
            waits = [_retry_after(f) for f in failures]
            wait = min((w for w in waits if w is not None), default=1.0)
            raise UpstreamRateLimited(
                f"Every upstream serving this model is rate limiting requests; retry after "
                f"{math.ceil(wait)} s.",
                headers={"retry-after": str(math.ceil(wait))},
                detail="; ".join(f.detail or f.message for f in failures),
            )
        if not failures:
            states = [a.state for a in router.every_attempt(call.model, call.route)]
            wait = math.ceil(max(min((s.seconds_closed() for s in states), default=1.0), 1.0))
            if states and all(s.rate_limited for s in states):
                raise UpstreamRateLimited(
                    "Every upstream serving this model is rate limiting requests; retry after "
                    f"{wait} s.",
                    headers={"retry-after": str(wait)},
                )
            raise ServiceUnavailable(
                "Every replica serving this model is out of rotation after failing; retry in "
                f"{wait} s.",
                code="no_healthy_replica",
                headers={"retry-after": str(wait)},
            )
        raise ServiceUnavailable(
            f"No upstream serving this model could answer ({tried} attempts); retry shortly.",
            code="upstream_exhausted",
            headers={"retry-after": "1"},
            detail="; ".join(f.detail or f.message for f in failures),
        )


@dataclass(slots=True)
class _Failure:
    err: TollgateError
    retryable: bool
    record: AttemptRecord


def kv_salt(call: Call, isolation: str) -> str | None:
    """The KV-cache salt of the call's tenant (None: tenants share blocks); the executor
    overwrites any a client sent."""
    if isolation == "shared":
        return None
    p = call.principal
    return tenant_key(p.name, p.team, p.org, isolation)


def _alias(call: Call) -> str:
    return call.route.alias if call.route is not None and call.route.alias else call.model


def _retry_after(err: TollgateError) -> float | None:
    value = err.headers.get("retry-after")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _said_retry_after(response: UpstreamResponse | None) -> float | None:
    """The upstream's own retry-after (seconds), not one the gateway adds for its client."""
    if response is None or response.status not in (429, 503, 529):
        return None
    for key, value in response.headers:
        if key == "retry-after":
            try:
                return float(value)
            except ValueError:
                return None
    return None


def _with_parent(headers: dict[str, str], span_id: int) -> dict[str, str]:
    """The call's trace context, with this attempt's own span as the upstream's parent."""
    parent = headers.get("traceparent")
    if parent is None:
        return headers
    version, trace_id, _, flags = parent.split("-")
    return {**headers, "traceparent": f"{version}-{trace_id}-{span_id:016x}-{flags}"}


class Tracked:
    """A served stream that gives its replica's in-flight count back when it closes, and
    counts a failure against the replica if it broke."""

    def __init__(self, inner: UpstreamStream, state: ReplicaState) -> None:
        self._inner = inner
        self._state: ReplicaState | None = state
        self._broken = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for block in self._inner:
                yield block
        except TollgateError:
            self._broken = True
            raise

    def usage(self) -> Usage:
        return self._inner.usage()

    def meta(self) -> ResponseMeta | None:
        return self._inner.meta()

    async def aclose(self) -> None:
        state, self._state = self._state, None
        try:
            await self._inner.aclose()
        finally:
            if state is not None:
                state.leave()
                if self._broken:
                    state.failed()
