"""Runs the ordered plugins over a call and records every decision they make."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from gateway.call import Answer, Call, Decision, Deny, Outcome, Route, Verdict
from gateway.errors import InternalError, TollgateError
from gateway.policies.base import Plugin

log = logging.getLogger("gateway.policies")


@dataclass(frozen=True, slots=True)
class ChainEntry:
    plugin: Plugin
    label: str
    shadow: bool


class PolicyChain:
    """First Deny or Answer wins; a Route applies and the chain goes on; shadow only records."""

    def __init__(self, entries: Sequence[ChainEntry]) -> None:
        self._entries = tuple(entries)
        self.response_errors = 0

    def __len__(self) -> int:
        return len(self._entries)

    async def on_request(self, call: Call) -> tuple[Deny | Answer | None, int]:
        """The verdict that stops the call (or None), and how many plugins ran."""
        ran = 0
        for entry in self._entries:
            ran += 1
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
        return verdict.message
    if isinstance(verdict, Answer):
        return f"answered ({verdict.cache})"
    return "route to " + ", ".join(f"{t.backend}/{t.model}" for t in verdict.targets)
