"""Flex calls: a synchronous call that says it can wait (`service_tier: "flex"`, or a rule's
`defer` action) waits for spare capacity, up to a bound, then is served normally and priced
at the tier that served it. Its wait is Tollgate's own, so `service_tier: "flex"` is not
passed upstream."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from gateway.call import Call
from gateway.routing.router import Router

# The call label a rule's `defer` action sets: the most seconds the call may wait.
FLEX_LABEL = "flex.max_wait_s"
_FIRST_S, _MOST_S = 0.02, 0.25  # how often a waiting call looks again (backing off)


def flex_wait(call: Call, default_s: float) -> float | None:
    """How long this call may wait for room (None: it is not a flex call)."""
    deferred = call.labels.get(FLEX_LABEL)
    if deferred is not None:
        return float(deferred)
    if call.body.get("service_tier") == "flex":
        return default_s
    return None


async def wait_for_room(
    router: Router,
    alias: str,
    below: int,
    most_s: float,
    clock: Callable[[], float] = time.monotonic,
) -> tuple[float, bool]:
    """Waits until a replica of the alias has room or `most_s` passed: (seconds waited, whether
    room was found)."""
    start = clock()
    step = _FIRST_S
    while not router.has_room(alias, below):
        waited = clock() - start
        if waited >= most_s:
            return waited, False
        await asyncio.sleep(min(step, most_s - waited))
        step = min(step * 2, _MOST_S)
    return clock() - start, True
