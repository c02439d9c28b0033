"""Hot reload: on SIGHUP or a changed file, validate and build the new Runtime, then swap it in.

An invalid edit never replaces the running config: the reason is logged and serving goes on.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Callable

from gateway.backends.base import Backend
from gateway.config.loader import load_config
from gateway.config.runtime import RuntimeDeps, RuntimeRef, build_runtime, retired_backends
from gateway.errors import ConfigError

log = logging.getLogger("gateway.config")

Stamp = tuple[tuple[str, int, int], ...]


class Reloader:
    def __init__(
        self,
        path: str,
        ref: RuntimeRef,
        deps: RuntimeDeps,
        poll_seconds: float,
        on_retire: Callable[[list[Backend]], None],
    ) -> None:
        self._path = path
        self._ref = ref
        self._deps = deps
        self._poll = poll_seconds
        self._on_retire = on_retire
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._pending: set[asyncio.Task[bool]] = set()
        self._stamp = _stamp(ref.current.loaded.files)
        self.attempts = 0
        self.failures = 0

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            loop.add_signal_handler(signal.SIGHUP, self._on_sighup)
        except (NotImplementedError, RuntimeError, ValueError):
            log.warning("SIGHUP reload unavailable here; relying on file polling")
        if self._poll > 0:
            self._task = asyncio.create_task(self._watch(), name="tollgate-config-watch")

    async def aclose(self) -> None:
        try:
            asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
        except (NotImplementedError, RuntimeError, ValueError):
            pass
        tasks = [*self._pending, *([self._task] if self._task else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _on_sighup(self) -> None:
        log.info("SIGHUP received: reloading %s", self._path)
        task = asyncio.get_running_loop().create_task(self.reload())
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self._poll)
            stamp = await asyncio.to_thread(_stamp, self._ref.current.loaded.files)
            if stamp != self._stamp:
                self._stamp = stamp
                log.info("configuration file changed: reloading %s", self._path)
                await self.reload()

    async def reload(self) -> bool:
        """True if a new Runtime is now serving; False if the old one was kept (and why logged)."""
        async with self._lock:
            self.attempts += 1
            try:
                loaded = await asyncio.to_thread(load_config, self._path)
                runtime = build_runtime(loaded, self._deps, previous=self._ref.current)
            except ConfigError as exc:
                self.failures += 1
                log.error(
                    "configuration reload rejected, keeping the running config:\n%s",
                    exc,
                    extra={"problems": exc.problems},
                )
                return False
            old, self._ref.current = self._ref.current, runtime
            self._stamp = _stamp(loaded.files)
            self._on_retire(retired_backends(old, runtime))
            log.info("configuration reloaded (generation %d)", runtime.generation)
            return True


def _stamp(files: tuple[str, ...]) -> Stamp:
    out = []
    for file in files:
        try:
            st = os.stat(file)
            out.append((file, st.st_mtime_ns, st.st_size))
        except OSError:
            out.append((file, -1, -1))
    return tuple(out)
