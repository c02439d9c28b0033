"""Runs batch jobs on spare capacity, in every gateway: whichever gateway holds a job's lease
runs its lines through the whole pipeline (routing, audit, telemetry; money against the job's
reservation), a few at a time, and only while a replica of the line's alias has room; near the
end of its window a job runs whatever the load. A job whose owner stops renewing its lease is
taken over by another gateway, which puts the lines the dead one had in flight back in the
queue (they never finished: nothing of theirs was written or settled).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import secrets
import time
from collections.abc import Callable
from typing import Any

import orjson
from sqlalchemy import Engine

from gateway.accounting.ledger import Ledger
from gateway.batches.money import LineShare, release_unrun
from gateway.batches.results import finalized
from gateway.call import Call, Decision, Principal
from gateway.config.batch_schema import BatchConfig
from gateway.dialects.errors import anthropic_type
from gateway.errors import TollgateError
from gateway.pipeline import Pipeline
from gateway.policies.budgets import BATCH
from gateway.runtime import Runtime
from gateway.stores import batches as store
from gateway.stores.batches import BatchRow, LineRow

log = logging.getLogger("gateway.batch")
_STEP_S = 0.05  # how often a job with nothing startable looks again (spare capacity, lines)


def principal_of(data: dict[str, Any]) -> Principal:
    models = data.get("models")
    return Principal(
        key_id=data["key_id"], name=data["name"], user=data.get("user"), team=data.get("team"),
        org=data.get("org"), tags=tuple(data.get("tags") or ()),
        models=frozenset(models) if models is not None else None,
    )  # fmt: skip


class BatchRunner:
    def __init__(
        self,
        engine: Engine,
        pipeline: Pipeline,
        current: Callable[[], Runtime],
        ledger: Ledger,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._engine = engine
        self._pipeline = pipeline
        self._current = current
        self._ledger = ledger
        self._clock = clock
        self.owner = "gw-" + secrets.token_hex(8)
        self._jobs: dict[str, asyncio.Task[None]] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.lines_run = 0

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    def nudge(self) -> None:
        """A job was submitted or cancelled here: look now, not at the next poll."""
        self._wake.set()

    async def aclose(self) -> None:
        tasks = [t for t in (self._task, *self._jobs.values()) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    @property
    def _settings(self) -> BatchConfig:
        return self._current().config.batch

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._settings.poll_seconds)
            self._wake.clear()
            try:
                await self._claim()
            except Exception:
                log.exception("looking for batch work failed; trying again")

    async def _claim(self) -> None:
        settings = self._settings
        ids = await asyncio.to_thread(
            store.claim, self._engine, self.owner, self._clock(), settings.lease_seconds, 16
        )
        for ident in ids:
            if ident not in self._jobs:
                task = asyncio.get_running_loop().create_task(self._job(ident))
                self._jobs[ident] = task
                task.add_done_callback(self._job_ended)

    def _job_ended(self, task: asyncio.Task[None]) -> None:
        for ident, held in list(self._jobs.items()):
            if held is task:
                del self._jobs[ident]

    async def _job(self, ident: str) -> None:
        try:
            orphans = await asyncio.to_thread(store.release_orphans, self._engine, ident,
                                              self.owner)  # fmt: skip
            if orphans:
                log.warning("batch %s taken over: %d unfinished lines queued again", ident,
                            orphans)  # fmt: skip
            await _Job(self, ident).run()
        except Exception:
            log.exception("batch %s failed in this gateway; another (or this one) resumes it",
                          ident)  # fmt: skip


class _Job:
    """One job while this gateway owns it: its status looked at (and its lease renewed) about
    once a second, lines started whenever there is room and spare capacity."""

    def __init__(self, runner: BatchRunner, ident: str) -> None:
        self.r = runner
        self.ident = ident
        self.running: set[asyncio.Task[None]] = set()
        self.rushing = False
        self.ended = asyncio.Event()  # a line finished: look again now

    async def run(self) -> None:
        r, engine = self.r, self.r._engine
        job: BatchRow | None = None
        looked = 0.0
        while True:
            settings, now = r._settings, r._clock()
            if job is None or now - looked >= min(1.0, settings.lease_seconds / 3):
                looked = now
                if not await asyncio.to_thread(store.renew, engine, self.ident, r.owner, now,
                                               settings.lease_seconds):  # fmt: skip
                    log.warning("batch %s: lease lost; its new owner goes on", self.ident)
                    return await self._drain()
                job = await asyncio.to_thread(store.get_batch, engine, self.ident)
                if job is None or job.status not in ("in_progress", "cancelling"):
                    return await self._drain()
                if job.status == "cancelling" or now >= job.expires_at:
                    ending = "cancelled" if job.status == "cancelling" else "expired"
                    return await self._close(job, ending)
                if not job.counts.get("pending") and not job.counts.get("running"):
                    return await self._finish(job, "completed")
            started = await self._start_lines(job, settings, now)
            self.ended.clear()
            if self.running or started:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.ended.wait(), _STEP_S * 4)
            else:
                await asyncio.sleep(_STEP_S * 4 if job.counts.get("pending") else _STEP_S)
                looked = 0.0 if not job.counts.get("pending") else looked

    async def _start_lines(self, job: BatchRow, settings: BatchConfig, now: float) -> int:
        room = settings.concurrency - len(self.running)
        if room <= 0 or not job.counts.get("pending"):
            return 0
        window = job.expires_at - job.created_at
        rush = now >= job.expires_at - settings.rush_fraction * window
        if rush and not self.rushing:
            self.rushing = True
            why = "standard tier: the end of its completion window is near, so it runs now"
            await asyncio.to_thread(store.set_placement, self.r._engine, self.ident, why)
            job = dataclasses.replace(job, placement=why)
        runtime = self.r._current()
        peeked = await asyncio.to_thread(store.peek_pending, self.r._engine, self.ident, room * 4)
        started = 0
        for number, alias in peeked:
            if started >= room:
                break
            if not rush and not runtime.router.has_room(alias, settings.spare_below):
                continue
            line = await asyncio.to_thread(store.take_line, self.r._engine, self.ident, number,
                                           self.r.owner)  # fmt: skip
            if line is None:
                continue
            task = asyncio.get_running_loop().create_task(self._line(job, line, runtime))
            self.running.add(task)
            task.add_done_callback(self._ended)
            started += 1
        job.counts["pending"] = max(0, job.counts.get("pending", 0) - started)
        return started

    def _ended(self, task: asyncio.Task[None]) -> None:
        self.running.discard(task)
        self.ended.set()

    async def _line(self, job: BatchRow, line: LineRow, runtime: Runtime) -> None:
        r = self.r
        alias = str(line.body.get("model"))
        share = LineShare(job.reservation, alias, line.worst_nanousd, line.worst_tokens)
        call = Call(f"{self.ident}-{line.line}", job.dialect,  # type: ignore[arg-type]
                    job.endpoint, alias, dict(line.body), False, False,  # type: ignore[arg-type]
                    principal=principal_of(job.principal))  # fmt: skip
        call.state[BATCH] = share
        where = job.placement or "local: spare capacity"
        why = f"batch {self.ident} line {line.line} ({line.custom_id}): {where}"
        call.decide(Decision("batch", "note", why))
        done = None
        try:
            reply = await r._pipeline.handle(call, runtime)
        except TollgateError as err:
            kind = anthropic_type(err.status) if job.dialect == "anthropic" else err.error_type
            result = {"status_code": err.status, "request_id": call.request_id, "body": None,
                      "error": {"code": err.code or err.error_type, "message": err.message,
                                "type": kind}}  # fmt: skip
        else:
            reply.seal()
            done = reply.done
            body = orjson.loads(reply.body) if reply.body else None
            result = {"status_code": reply.status, "request_id": call.request_id, "body": body,
                      "error": None}  # fmt: skip
        code = int(str(result["status_code"]))
        status = "succeeded" if 200 <= code < 300 else "errored"
        won = await asyncio.to_thread(store.finish_line, r._engine, self.ident, line.line,
                                      r.owner, status, result, r._clock())  # fmt: skip
        if done is not None:
            await done()  # the budgets policy hands the share what the line spent
        if won:
            share.apply(r._ledger)
            await r._ledger.ship()  # before the next line: a kill loses none of this one's
            r.lines_run += 1
        else:
            log.warning("batch %s line %d: another gateway owns it now; its result stands",
                        self.ident, line.line)  # fmt: skip

    async def _drain(self) -> None:
        if self.running:
            await asyncio.gather(*self.running, return_exceptions=True)

    async def _close(self, job: BatchRow, status: str) -> None:
        """Cancelled or expired: no new lines; those in flight finish; the rest end unrun."""
        await self._drain()
        closed = await asyncio.to_thread(
            store.close_pending, self.r._engine, self.ident, status, self.r._clock()
        )
        release_unrun(self.r._ledger, job.reservation,
                      ((str(c.body.get("model")), c.worst_nanousd, c.worst_tokens)
                       for c in closed))  # fmt: skip
        await self._finish(job, status)

    async def _finish(self, job: BatchRow, status: str) -> None:
        await self._drain()
        lines = await asyncio.to_thread(store.results, self.r._engine, self.ident)
        output, errors = finalized(job, lines, self.r._clock())
        if await asyncio.to_thread(store.finalize, self.r._engine, self.ident, self.r.owner,
                                   status, self.r._clock(), output, errors):  # fmt: skip
            log.info("batch %s %s: %d lines", self.ident, status, len(lines))
