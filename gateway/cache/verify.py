"""Semantic hits checked against the truth: a sample of them is also sent upstream, after the
client has its answer, and the two answers compared with the quality guard's comparators.
The false-hit rate each namespace shows decides its threshold: above the bound it is
raised a step, and past the ceiling the namespace's semantic cache is switched off, each
decision logged. State outlives config reloads (it lives with the stores)."""

from __future__ import annotations

import asyncio
import logging
import random
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from gateway.cache.entry import Entry
from gateway.config.cache_schema import VerifyConfig
from gateway.policies.rules.compare import (
    Answer,
    Comparator,
    Context,
    Embed,
    answer_in,
    answer_of,
    resolve,
)

log = logging.getLogger("gateway.cache")

# Sends the call's request upstream with the cache bypassed: (status, body in its dialect).
Reference = Callable[[], Awaitable[tuple[int, bytes]]]


@dataclass(slots=True)
class NamespaceVerdicts:
    """One namespace's recent checks and where its threshold stands."""

    threshold: float
    configured: float  # the threshold ops wrote: a new one starts the namespace afresh
    results: deque[bool] = field(default_factory=deque)
    checks: int = 0
    false_hits: int = 0
    errors: int = 0
    off: bool = False

    @property
    def false_rate(self) -> float | None:
        return self.results.count(False) / len(self.results) if self.results else None


class Verifier:
    def __init__(self, rng: random.Random | None = None) -> None:
        self.spaces: dict[str, NamespaceVerdicts] = {}
        self._rng = rng or random.Random()
        self._tasks: set[asyncio.Task[None]] = set()
        self._comparators: dict[str, Comparator] = {}

    def state(self, namespace: str, threshold: float) -> NamespaceVerdicts:
        found = self.spaces.get(namespace)
        if found is None or found.configured != threshold:
            found = self.spaces[namespace] = NamespaceVerdicts(threshold, threshold)
        return found

    def sampled(self, settings: VerifyConfig) -> bool:
        return self._rng.random() < settings.sample

    def check(
        self,
        namespace: str,
        entry: Entry,
        reference: Reference,
        settings: VerifyConfig,
        dialect: str,
        embed: Embed | None = None,
    ) -> None:
        """Starts one check (not awaited). `embed`: the semantic cache's own embedding model,
        for the comparators that compare prose by meaning (`auto`, `embedding`)."""
        task = asyncio.create_task(
            self._check(namespace, entry, reference, settings, dialect, embed)
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _check(
        self,
        namespace: str,
        entry: Entry,
        reference: Reference,
        settings: VerifyConfig,
        dialect: str,
        embed: Embed | None,
    ) -> None:
        state = self.spaces[namespace]
        try:
            status, body = await reference()
            theirs = answer_of(body, dialect, False) if status == 200 else None
            ours = cached_answer(entry.body)
            if theirs is None or ours is None:
                state.errors += 1
                return
            agreed = await self._comparator(settings.compare).agree(
                ours, theirs, Context(settings.similarity, embed)
            )
        except Exception:
            state.errors += 1
            log.exception("semantic cache check in %s failed", namespace)
            return
        self.record(namespace, agreed, settings)

    def record(self, namespace: str, agreed: bool, settings: VerifyConfig) -> None:
        state = self.spaces[namespace]
        state.checks += 1
        state.false_hits += not agreed
        state.results.append(agreed)
        while len(state.results) > settings.window:
            state.results.popleft()
        rate = state.false_rate
        if state.off or rate is None or len(state.results) < settings.min_samples:
            return
        if rate <= settings.max_false_rate:
            return
        before = state.threshold
        state.threshold = round(before + settings.step, 6)
        state.results.clear()  # the new threshold is judged on its own hits
        if state.threshold > settings.max_threshold:
            state.off = True
            log.error(
                "semantic cache of %s switched off: %.1f%% of its sampled hits were wrong "
                "(bound %.1f%%) even at threshold %.3f; exact hits continue",
                namespace, rate * 100, settings.max_false_rate * 100, before,
            )  # fmt: skip
        else:
            log.warning(
                "semantic cache of %s: %.1f%% of its sampled hits were wrong (bound %.1f%%); "
                "threshold raised %.3f -> %.3f",
                namespace, rate * 100, settings.max_false_rate * 100, before, state.threshold,
            )  # fmt: skip

    def _comparator(self, name: str) -> Comparator:
        found = self._comparators.get(name)
        if found is None:
            found = self._comparators[name] = resolve(name)
        return found

    async def drain(self) -> None:
        """Waits for the checks in flight (tests; shutdown cancels them instead)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


def cached_answer(completion: dict[str, Any]) -> Answer | None:
    """An entry's answer as the comparators read one (its first choice)."""
    return answer_in(completion, "openai")
