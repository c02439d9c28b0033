"""How busy this process is, for autoscalers and load balancers: calls being handled now, and
how long ready work waits for the event loop. Both are read at scrape time; nothing runs while
the gateway is idle."""

from __future__ import annotations

import asyncio

# The series names on /metrics (deploy/k8s/base/hpa.yaml scales on the first).
IN_FLIGHT = "tollgate_calls_in_flight"
LOOP_LAG = "tollgate_event_loop_lag_seconds"


class Load:
    """Proxied calls this process is handling now, streams until their last byte. CPU alone
    misreads a gateway: a process waiting on slow upstreams is full at a few percent CPU."""

    __slots__ = ("in_flight",)

    def __init__(self) -> None:
        self.in_flight = 0


async def loop_lag() -> float:
    """Seconds a callback scheduled now waits to run: the ready work ahead of it. Near zero
    until the process is CPU-bound; then every call's latency grows by it."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    await asyncio.sleep(0)
    return loop.time() - start
