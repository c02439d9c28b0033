"""Budget alerts, delivered: each crossing (accounting/alerts.py) is claimed once per fleet in
SQL, posted to its webhooks with retry and back-off, and recorded in the audit log.

All of it runs off the request path: a call only puts a crossing on a bounded queue. Claiming
in SQL (a row keyed by budget, subject, window and threshold) is what makes an alert fire once
per window however many gateways see the budget pass it. A gateway that dies after claiming
and before delivering loses that delivery (the claim row says when it fired).
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

import httpx
import orjson
from sqlalchemy import Engine, insert
from sqlalchemy.exc import IntegrityError

from gateway.accounting.alerts import Crossing
from gateway.accounting.pricing import usd
from gateway.call import NO_TIMINGS, CallRecord, Decision, Principal
from gateway.config.alerts_schema import AlertsConfig, WebhookConfig
from gateway.sinks.base import DurableSink
from gateway.stores.sql import budget_alerts

log = logging.getLogger("gateway.alerts")
_QUEUE = 1000
_RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})


@dataclass(frozen=True, slots=True)
class Delivery:
    webhook: str
    delivered: bool
    tries: int
    last: str  # the last answer: "HTTP 200", "HTTP 503", "ConnectError: ..."


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _amount(unit: str, value: int) -> str:
    return f"${usd(value).quantize(Decimal('0.01'))}" if unit == "usd" else f"{value} tokens"


def describe(c: Crossing) -> str:
    resets = f", resets {_iso(c.window.end)}" if c.window.end is not None else ""
    return (
        f"Budget '{c.budget}' ({c.subject}) passed {c.threshold}% of its {c.window.kind} limit: "
        f"{_amount(c.unit, c.used)} of {_amount(c.unit, c.limit)} ({c.enforcement}{resets})."
    )


def payload(c: Crossing, fmt: str, fired_at: float) -> bytes:
    """The body a webhook receives: Tollgate's JSON, or a Slack message (`text`)."""
    if fmt == "slack":
        return orjson.dumps({"text": f":warning: {describe(c)}"})
    value: Callable[[int], object] = (lambda n: str(usd(n))) if c.unit == "usd" else (lambda n: n)
    return orjson.dumps(
        {
            "type": "tollgate.budget_alert",
            "budget": c.budget,
            "subject": c.subject,
            "threshold_percent": c.threshold,
            "unit": c.unit,
            "used": value(c.used),
            "limit": value(c.limit),
            "enforcement": c.enforcement,
            "window": {
                "kind": c.window.kind,
                "start": _iso(c.window.start),
                "end": _iso(c.window.end) if c.window.end is not None else None,
            },
            "fired_at": _iso(fired_at),
            "message": describe(c),
        }
    )


class Alerter:
    """Long-lived (one per process): its webhooks and retry settings come from the config of
    the moment (`settings`), so a reload changes where the next alert goes."""

    def __init__(
        self,
        engine: Engine,
        settings: Callable[[], AlertsConfig],
        journal: DurableSink | None = None,
        *,
        env: Mapping[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._engine = engine
        self._settings = settings
        self._journal = journal
        self._env = env if env is not None else os.environ
        self._transport = transport
        self._clock = clock
        self._sleep = sleep
        self._queue: asyncio.Queue[Crossing] = asyncio.Queue(_QUEUE)
        self._task: asyncio.Task[None] | None = None
        self._deliveries: set[asyncio.Task[None]] = set()
        self._dropped = 0
        self.sent = 0  # alerts fully handled by this process (claimed, posted, recorded)

    def crossed(self, crossing: Crossing) -> None:
        try:
            self._queue.put_nowait(crossing)
        except asyncio.QueueFull:
            self._dropped += 1
            if self._dropped == 1 or self._dropped % 100 == 0:
                log.error("budget alert queue full: %d alerts dropped", self._dropped)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def aclose(self) -> None:
        tasks = [t for t in (self._task, *self._deliveries) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def idle(self) -> None:
        """Returns once every queued crossing has been claimed and delivered (or given up)."""
        await self._queue.join()
        while self._deliveries:
            await asyncio.gather(*list(self._deliveries), return_exceptions=True)

    async def _run(self) -> None:
        while True:
            crossing = await self._queue.get()
            try:
                fired_at = self._clock()
                if await asyncio.to_thread(self._claim, crossing, fired_at):
                    task = asyncio.get_running_loop().create_task(self._deliver(crossing, fired_at))
                    self._deliveries.add(task)
                    task.add_done_callback(self._deliveries.discard)
            except Exception:
                log.exception("budget alert for %s could not be claimed", crossing.budget)
            finally:
                self._queue.task_done()

    def _claim(self, c: Crossing, fired_at: float) -> bool:
        """True if this process is the first in the fleet to fire this threshold."""
        try:
            with self._engine.begin() as conn:
                conn.execute(
                    insert(budget_alerts).values(
                        budget=c.budget,
                        subject=c.subject,
                        window_tag=c.window.tag,
                        threshold=c.threshold,
                        fired_at=fired_at,
                        used_nanousd=c.used if c.unit == "usd" else 0,
                        limit_nanousd=c.limit if c.unit == "usd" else 0,
                    )
                )
        except IntegrityError:
            return False
        return True

    async def _deliver(self, c: Crossing, fired_at: float) -> None:
        settings = self._settings()
        hooks = [w for w in settings.webhooks if c.notify is None or w.name in c.notify]
        log.warning("%s", describe(c), extra={"budget": c.budget, "subject": c.subject})
        async with httpx.AsyncClient(
            transport=self._transport, timeout=settings.timeout_seconds
        ) as client:
            results = await asyncio.gather(
                *(self._post(client, hook, c, fired_at, settings) for hook in hooks)
            )
        self._record(c, fired_at, results)
        self.sent += 1

    async def _post(
        self,
        client: httpx.AsyncClient,
        hook: WebhookConfig,
        c: Crossing,
        fired_at: float,
        settings: AlertsConfig,
    ) -> Delivery:
        url = hook.url if hook.url is not None else self._env.get(hook.url_env or "")
        if not url:
            return Delivery(hook.name, False, 0, f"environment variable {hook.url_env} not set")
        body = payload(c, hook.format, fired_at)
        headers = {"content-type": "application/json", **hook.headers}
        last = ""
        for attempt in range(1, settings.attempts + 1):
            wait = min(settings.backoff_seconds * 2 ** (attempt - 1), settings.max_backoff_seconds)
            try:
                reply = await client.post(url, content=body, headers=headers)
            except httpx.HTTPError as exc:
                last = f"{type(exc).__name__}: {exc}"
            else:
                last = f"HTTP {reply.status_code}"
                if reply.status_code < 300:
                    return Delivery(hook.name, True, attempt, last)
                if reply.status_code not in _RETRY_STATUSES:
                    break  # the receiver refuses this alert: trying again will not help
                wait = max(wait, _retry_after(reply, settings.max_backoff_seconds))
            if attempt < settings.attempts:
                await self._sleep(wait)
        log.error("budget alert to webhook %s failed: %s", hook.name, last)
        return Delivery(hook.name, False, attempt, last)

    def _record(self, c: Crossing, fired_at: float, results: list[Delivery]) -> None:
        """The alert as an audit event: what fired, then each webhook's delivery."""
        if self._journal is None:
            return
        failed = [r for r in results if not r.delivered]
        decisions = [Decision("alerts", "note", describe(c))]
        for r in results:
            done = "delivered" if r.delivered else "not delivered"
            told = f"webhook {r.webhook}: {done} ({r.tries} tries, {r.last})"
            decisions.append(Decision("alerts", "note", told))
        if not results:
            decisions.append(Decision("alerts", "note", "no webhook is configured for it"))
        scope, _, value = c.subject.partition(" ")
        principal = Principal(  # `team ml` -> team=ml: a per-team query finds its alerts
            key_id="tollgate",
            name=c.subject,
            user=value if scope == "user" else None,
            team=value if scope == "team" else None,
            org=value if scope == "org" else None,
        )
        self._journal.append(
            CallRecord(
                request_id="alert-" + secrets.token_hex(12),
                dialect="tollgate",
                endpoint="budget_alert",
                model=c.budget,
                principal=principal,
                received_at=fired_at,
                first_byte_at=None,
                completed_at=self._clock(),
                status=502 if failed else 200,
                error_type="webhook_failed" if failed else None,
                backend=None,
                upstream_model=None,
                tier=None,
                usage=None,
                cache="bypass",
                stream=False,
                disconnected=False,
                decisions=tuple(decisions),
                client_ip=None,
                user_agent=None,
                kind="alert",
                timings=NO_TIMINGS,
            )
        )


def _retry_after(reply: httpx.Response, cap: float) -> float:
    value = reply.headers.get("retry-after", "")
    return min(float(value), cap) if value.isdigit() else 0.0
