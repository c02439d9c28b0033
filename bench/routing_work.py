"""What the routing layer costs in process: `Executor.run` (plan, strategy, replica state, the
attempt's record) against an instant fake backend, for one replica and for eight, beside sending
straight to the backend as the pipeline did before the routing layer.

    python bench/routing_work.py [--calls 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.accounting.tokens import TokenCounter
from gateway.backends import bridge
from gateway.backends.base import Capabilities, UpstreamRequest, UpstreamResponse
from gateway.backends.scrub import Scrubber
from gateway.call import Call, Principal
from gateway.routing.executor import Executor
from gateway.routing.router import Router
from gateway.routing.state import CircuitSettings, ReplicaStates
from gateway.routing.strategies import LeastOutstanding
from gateway.routing.table import AliasRoute, Replica, RetryPolicy, Tier


class Instant:
    name = "instant"
    total_timeout = 600.0
    capabilities = Capabilities("openai", True, True, True, False, False, True)

    async def send(self, request: UpstreamRequest) -> UpstreamResponse:
        return UpstreamResponse(200, (), b"{}")

    async def probe(self, path: str, wait: float) -> tuple[int, bytes]:
        return 200, b""

    async def aclose(self) -> None:
        return None


def routed(replicas: int) -> tuple[Router, dict[str, Any]]:
    pool = tuple(Replica(f"b{i}", "m", "t") for i in range(replicas))
    route = AliasRoute(
        "chat", {"t": Tier("t", pool, "least_outstanding")}, "t", "t", (), RetryPolicy()
    )
    registry = ReplicaStates()
    states = {r.key: registry.get(r.key, "s", CircuitSettings()) for r in pool}
    router = Router({"chat": route}, states, {("chat", "t"): LeastOutstanding()})
    return router, {r.backend: Instant() for r in pool}


async def main(calls: int) -> None:
    executor = Executor(TokenCounter())
    call = Call("r", "openai", "chat.completions", "chat", {"messages": []}, False, False,
                principal=Principal("k", "k"))  # fmt: skip
    scrub = Scrubber([])
    for replicas in (1, 8):
        router, backends = routed(replicas)
        started = time.perf_counter()
        for _ in range(calls):
            await executor.run(call, router, backends, scrub, {}, [])
        per_call = (time.perf_counter() - started) / calls * 1e6
        print(f"executor, {replicas} replica(s): {per_call:.1f} us per call")
    backend = Instant()
    request = UpstreamRequest("chat.completions", "m", {}, False, False, "r", {}, "openai")
    loop = asyncio.get_running_loop()
    started = time.perf_counter()
    for _ in range(calls):
        async with asyncio.timeout_at(loop.time() + 600):
            await bridge.send(backend, request, TokenCounter)  # type: ignore[arg-type]
    per_call = (time.perf_counter() - started) / calls * 1e6
    print(f"straight to the backend: {per_call:.1f} us per call")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--calls", type=int, default=20_000)
    asyncio.run(main(parser.parse_args().calls))
