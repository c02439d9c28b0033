"""A bounded queue between the request path and the sinks, drained in batches in the background."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from gateway.call import CallRecord
from gateway.sinks.base import Sink

log = logging.getLogger("gateway.sinks")


class SinkFanout:
    """`submit` never blocks or raises; a full queue drops the record and counts it."""

    def __init__(self, sinks: Sequence[Sink], *, capacity: int, batch_size: int = 256) -> None:
        self._sinks = tuple(sinks)
        self._queue: asyncio.Queue[CallRecord] = asyncio.Queue(capacity)
        self._batch_size = batch_size
        self._task: asyncio.Task[None] | None = None
        self.dropped = 0
        self.failures = 0
        self.written = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._drain(), name="tollgate-sink-fanout")

    def submit(self, record: CallRecord) -> None:
        try:
            self._queue.put_nowait(record)
        except asyncio.QueueFull:
            self.dropped += 1
            if self.dropped in (1, 100) or self.dropped % 10_000 == 0:
                log.error("sink queue full: %d call records dropped so far", self.dropped)

    async def _drain(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self._batch_size and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            await self._write(batch)
            for _ in batch:
                self._queue.task_done()

    async def _write(self, batch: list[CallRecord]) -> None:
        for sink in self._sinks:
            try:
                await sink.write(batch)
            except Exception:
                self.failures += 1
                log.exception("sink %s failed to write %d records", sink.name, len(batch))
        self.written += len(batch)

    async def drained(self) -> None:
        """Until every record handed in so far has been written to every sink."""
        await self._queue.join()

    async def aclose(self, flush_seconds: float = 10.0) -> None:
        """Flushes what is queued (for at most `flush_seconds`), then closes every sink."""
        if self._task is not None:
            try:
                await asyncio.wait_for(self._queue.join(), flush_seconds)
            except TimeoutError:
                log.error("sink flush timed out with %d records left", self._queue.qsize())
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        for sink in self._sinks:
            try:
                await sink.aclose()
            except Exception:
                log.exception("sink %s failed to close", sink.name)
