"""Runs the app under uvicorn, with a main loop that sleeps while the gateway is idle.

uvicorn's main loop wakes ten times a second to refresh the Date header and to look for a
shutdown request: that alone is ~0.2% of a core on an idle server (docs/benchmarks.md). This one
wakes once a second (the Date header's own resolution) and at once when a signal asks it to
stop, so a shutdown is not delayed."""

from __future__ import annotations

import asyncio
import contextlib
from types import FrameType
from typing import Any

import uvicorn

from gateway.connections import GuardedConfig


class QuietServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_asked: asyncio.Event | None = None

    async def main_loop(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop_asked = stop = asyncio.Event()
        counter = 0
        should_exit = await self.on_tick(counter)
        while not should_exit:
            counter = (counter + 10) % 864000  # every tick refreshes the Date header
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)
            should_exit = await self.on_tick(counter)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        if self._loop is not None and self._stop_asked is not None:
            self._loop.call_soon_threadsafe(self._stop_asked.set)


def serve(app: Any, *, workers: int = 1, **options: Any) -> None:
    """What `uvicorn.run` does, with our Config (connections.py), on QuietServer for a single
    process (uvicorn's multi-process supervisor builds its workers' servers itself)."""
    config = GuardedConfig(app, workers=workers, **options)
    if workers > 1:
        from uvicorn.supervisors import Multiprocess

        sock = config.bind_socket()
        Multiprocess(config, sockets=[sock]).run()
        return
    QuietServer(config).run()
