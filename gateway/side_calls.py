"""The gateway's own calls (a quality guard's reference, a semantic cache's embedding and
check) through the whole pipeline: budgeted, routed and audited like any other."""

from __future__ import annotations

from collections.abc import Callable

from gateway.call import Call
from gateway.errors import TollgateError
from gateway.pipeline import Pipeline
from gateway.runtime import Runtime


class SideCaller:
    """The gateway's own calls (a quality guard's reference call) through the whole pipeline,
    on whatever runtime is current: they are budgeted, routed and audited like any other.
    Bound to the pipeline once both exist (the runtime it builds needs this first)."""

    def __init__(self) -> None:
        self._pipeline: Pipeline | None = None
        self._current: Callable[[], Runtime] | None = None

    def bind(self, pipeline: Pipeline, current: Callable[[], Runtime]) -> None:
        self._pipeline, self._current = pipeline, current

    async def run(self, call: Call) -> tuple[int, bytes]:
        if self._pipeline is None or self._current is None:
            raise RuntimeError("side calls are not bound to a pipeline yet")
        try:
            reply = await self._pipeline.handle(call, self._current())
        except TollgateError as err:
            return err.status, b""
        if reply.stream is not None:  # a side call never streams; close what it got
            await reply.stream.close()
            return reply.status, b""
        reply.seal()
        await reply.done()
        return reply.status, reply.body
