"""Runs the ordered plugins over a call and records every decision they make."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from gateway.call import Answer, Call, Decision, Deny, Outcome, Route, Verdict
from gateway.errors import InternalError, TollgateError
from gateway.policies.base import Plugin

log = logging.getLogger("gateway.policies")


@dataclass(frozen=True, slots=True)
class ChainEntry:
    plugin: Plugin
    label: str
    shadow: bool

    @property
    def lookup(self) -> bool:
        """A cache plugin (class attribute `lookup = True`): its evaluation is timed as a
        `cache lookup` span of its own."""
        return bool(getattr(self.plugin, "lookup", False))


class PolicyChain:
    """First Deny or Answer wins; a Route applies and the chain goes on; shadow only records."""

    def __init__(self, entries: Sequence[ChainEntry]) -> None:
        self._entries = tuple(entries)
        self._lookups = frozenset(i for i, e in enumerate(self._entries) if e.lookup)
        self.response_errors = 0

    def plugins(self) -> list[Any]:
        """The plugins in chain order (for tools that look at their configuration)."""
        return [entry.plugin for entry in self._entries]

    def entries(self) -> tuple[ChainEntry, ...]:
        """The chain as configured: each plugin with its label and mode."""
        return self._entries

    def __len__(self) -> int:
        return len(self._entries)

    async def on_request(self, call: Call) -> tuple[Deny | Answer | None, int]:
        """The verdict that stops the call (or None), and how many plugins ran."""
        ran = 0
        lookups = self._lookups
        for entry in self._entries:
            ran += 1
            if lookups and ran - 1 in lookups:
                verdict = await self._timed(entry, call)
            else:
                verdict = await self._ask(entry, call)
            if verdict is None:
                continue
            if entry.shadow:
                call.decide(Decision(entry.label, "shadow", _describe(verdict), enforced=False))
                continue
            if isinstance(verdict, Route):
                call.route = verdict
                call.decide(Decision(entry.label, "route", verdict.reason or _describe(verdict)))
                continue
            call.decide(Decision(entry.label, _action(verdict), _describe(verdict)))
            return verdict, ran
        return None, ran

    async def on_response(self, call: Call, outcome: Outcome, ran: int) -> None:
        for entry in reversed(self._entries[:ran]):
            try:
                await entry.plugin.on_response(call, outcome)
            except Exception:
                self.response_errors += 1
                log.exception("policy %s on_response failed", entry.label)

    async def aclose(self) -> None:
        for entry in self._entries:
            try:
                await entry.plugin.aclose()
            except Exception:
                log.exception("policy %s failed to close", entry.label)

    async def _timed(self, entry: ChainEntry, call: Call) -> Verdict | None:
        start = time.time()
        try:
            return await self._ask(entry, call)
        finally:
            if call.lookups is None:
                call.lookups = []
            call.lookups.append((entry.label, start, time.time()))

    @staticmethod
    async def _ask(entry: ChainEntry, call: Call) -> Verdict | None:
        try:
            return await entry.plugin.on_request(call)
        except TollgateError:
            raise
        except Exception as exc:
            log.exception("policy %s on_request failed", entry.label)
            raise InternalError(f"policy {entry.label} failed") from exc


def _action(verdict: Deny | Answer) -> Literal["deny", "answer"]:
    return "deny" if isinstance(verdict, Deny) else "answer"


def _describe(verdict: Verdict) -> str:
    if isinstance(verdict, Deny):
        return verdict.reason or verdict.message
    if isinstance(verdict, Answer):
        return f"answered ({verdict.cache})"
    where = " of ".join(x for x in (verdict.tier and f"tier {verdict.tier}", verdict.alias) if x)
    return f"route to {where or 'the default tier'}" + (
        f": {verdict.reason}" if verdict.reason else ""
    )
