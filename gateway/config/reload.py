"""Hot reload: on SIGHUP or a changed file, validate and build the new Runtime, then swap it in.

An invalid edit never replaces the running config: the reason is logged and serving goes on.
A file watcher waits until a changed file has stopped changing (an editor's save, a config
management run) and will not, on its own, apply a config that removes every model, limit or
policy the running one has: that takes a deliberate SIGHUP. Every reload logs what it changed.
A retired Runtime is closed (its policy chain, the backends no longer used) once the calls
that started on it have finished.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Callable, Coroutine, Iterable
from typing import Any, Generic, Protocol, TypeVar

from gateway.config.changes import describe, drastic
from gateway.config.loader import LoadedConfig, load_config, policy_file_paths
from gateway.errors import ConfigError

log = logging.getLogger("gateway.config")

Stamp = tuple[tuple[str, int, int], ...]


class CallCount:
    """Calls running on one runtime, so a retired one is closed only once they have finished
    (its backends' connections and its plugins' resources are still in use until then)."""

    __slots__ = ("_idle", "running")

    def __init__(self) -> None:
        self.running = 0
        self._idle: asyncio.Event | None = None

    def enter(self) -> None:
        self.running += 1

    def leave(self) -> None:
        self.running -= 1
        if self.running == 0 and self._idle is not None:
            self._idle.set()

    async def idle(self) -> None:
        if self.running == 0:
            return
        self._idle = asyncio.Event()
        await self._idle.wait()


class Live(Protocol):
    """What the reloader needs of a runtime (the composition root builds them)."""

    @property
    def loaded(self) -> LoadedConfig: ...

    @property
    def generation(self) -> int: ...

    @property
    def calls(self) -> CallCount: ...

    async def aclose(self, keep: Iterable[Any] = ()) -> None: ...


R = TypeVar("R", bound=Live)


class Ref(Protocol[R]):
    current: R


Builder = Callable[[LoadedConfig, R | None], R]
SETTLE_S = 0.5  # a changed file must look the same this long before it is read
_SETTLE_TRIES = 20
DRAIN_LIMIT_S = 3600.0  # a retired runtime is closed after this even if a call still runs


class Reloader(Generic[R]):
    def __init__(
        self,
        path: str,
        ref: Ref[R],
        build: Builder[R],
        poll_seconds: float,
        settle_seconds: float = SETTLE_S,
    ) -> None:
        self._path = path
        self._build = build
        self._ref = ref
        self._poll = poll_seconds
        self._settle = settle_seconds
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._pending: set[asyncio.Task[object]] = set()
        self._draining: list[R] = []
        self._stamp = _stamp(watched(ref.current))
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
        """Stops watching; runtimes still draining are closed now (the server has stopped)."""
        try:
            asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
        except (NotImplementedError, RuntimeError, ValueError):
            pass
        tasks = [*self._pending, *([self._task] if self._task else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        draining, self._draining = self._draining, []
        for runtime in draining:
            await runtime.aclose(keep=[self._ref.current])

    def _spawn(self, coro: Coroutine[object, object, object]) -> None:
        task: asyncio.Task[object] = asyncio.get_running_loop().create_task(coro)
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    def _on_sighup(self) -> None:
        log.info("SIGHUP received: reloading %s", self._path)
        self._spawn(self.reload(deliberate=True))

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self._poll)
            try:
                stamp = await asyncio.to_thread(_stamp, watched(self._ref.current))
                if stamp == self._stamp:
                    continue
                stamp = await self._settled(stamp)
                changed = _changed(self._stamp, stamp)
                self._stamp = stamp
                log.info("configuration changed (%s): reloading %s", changed, self._path)
                await self.reload(deliberate=False)
            except Exception:  # the watcher must outlive anything a reload throws
                log.exception("configuration watcher tick failed; still watching")

    async def _settled(self, stamp: Stamp) -> Stamp:
        """Waits until the watched files look the same `settle` seconds apart: a save that
        is still being written is not read half-way."""
        for _ in range(_SETTLE_TRIES):
            await asyncio.sleep(self._settle)
            again = await asyncio.to_thread(_stamp, watched(self._ref.current))
            if again == stamp:
                return stamp
            stamp = again
        return stamp

    async def reload(self, deliberate: bool = True) -> bool:
        """True if a new Runtime is now serving; False if the old one was kept (and why logged).
        `deliberate` (SIGHUP, an admin) may remove every model, limit or policy; a file
        watcher may not."""
        async with self._lock:
            self.attempts += 1
            old = self._ref.current
            try:
                loaded = await asyncio.to_thread(load_config, self._path)
                removed = drastic(old.loaded, loaded)
                if removed and not deliberate:
                    self.failures += 1
                    log.error(
                        "configuration reload refused, keeping the running config: the "
                        "changed file removes %s. If that is intended, send SIGHUP to apply "
                        "it deliberately.",
                        " and ".join(removed),
                    )
                    return False
                runtime = self._build(loaded, old)
            except ConfigError as exc:
                self.failures += 1
                log.error(
                    "configuration reload rejected, keeping the running config:\n%s",
                    exc,
                    extra={"problems": exc.problems},
                )
                return False
            except Exception:
                self.failures += 1
                log.exception("configuration reload failed, keeping the running config")
                return False
            self._ref.current = runtime
            self._stamp = _stamp(watched(runtime))
            self._draining.append(old)
            self._spawn(self._retire(old))
            log.info(
                "configuration reloaded (generation %d)%s: %s",
                runtime.generation,
                " by SIGHUP" if deliberate and removed else "",
                "; ".join(describe(old.loaded, loaded)),
            )
            return True

    async def _retire(self, old: R) -> None:
        """Closes a replaced runtime once its calls are done (a stream may run for minutes)."""
        try:
            await asyncio.wait_for(old.calls.idle(), DRAIN_LIMIT_S)
        except TimeoutError:
            log.warning(
                "closing a replaced configuration with %d calls still running", old.calls.running
            )
        self._draining.remove(old)
        await old.aclose(keep=[self._ref.current, *self._draining])


def watched(runtime: Live) -> list[str]:
    """The main file and every file its `policy_files` patterns match now (a new file that
    matches is picked up; a deleted one is noticed)."""
    loaded = runtime.loaded
    return [loaded.source, *policy_file_paths(loaded.source, loaded.config.policy_files)]


def _stamp(files: list[str]) -> Stamp:
    out = []
    for file in files:
        try:
            st = os.stat(file)
            out.append((file, st.st_mtime_ns, st.st_size))
        except OSError:
            out.append((file, -1, -1))
    return tuple(out)


def _changed(before: Stamp, after: Stamp) -> str:
    old = {f: (m, s) for f, m, s in before}
    new = {f: (m, s) for f, m, s in after}
    parts = [f"{f} added" for f in new if f not in old]
    parts += [f"{f} removed" for f in old if f not in new]
    parts += [f"{f} modified" for f in new if f in old and new[f] != old[f]]
    return ", ".join(parts) or "touched"
