"""A job's money: its worst case reserved against the submitting key's budgets when it is
submitted (refused up front if it does not fit), each line's share settled once at what the
line really cost, and what never ran released at the end.

The reservation is `lasting` (no hold tag: a batch outlives any one gateway's hold) and is
recorded on the job (each counter's key, unit, amount and the aliases whose lines it covers),
so whichever gateway runs a line can settle that line's share of it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.accounting.ledger import Denial, Hold, Ledger
from gateway.accounting.limits import Ask, Line
from gateway.accounting.spend import Spent
from gateway.call import Call, Dialect, Endpoint, Principal
from gateway.policies.budgets import BudgetGuard
from gateway.runtime import Runtime

Counters = list[list[Any]]  # [key, unit, amount, ttl, [aliases]] each, as the job stores them


def guard_of(runtime: Runtime) -> BudgetGuard:
    """The budgets policy of this runtime (always in the chain)."""
    return next(p for p in runtime.chain.plugins() if isinstance(p, BudgetGuard))


def worst_case(
    runtime: Runtime,
    principal: Principal,
    dialect: Dialect,
    endpoint: Endpoint,
    body: dict[str, Any],
) -> tuple[int, int]:
    """A line's worst case (nano-dollars, tokens), as a live call of it would reserve; nothing
    for a model the key may not use (the line will fail without running)."""
    model = body.get("model")
    if not isinstance(model, str) or model not in runtime.router or not principal.may_use(model):
        return 0, 0
    call = Call("batch-worst-case", dialect, endpoint, model, dict(body), False, False,
                principal=principal)  # fmt: skip
    ask = guard_of(runtime).ask(call)
    return ask.usd_nanos, ask.tokens


def plan(
    runtime: Runtime, principal: Principal, worst: Iterable[tuple[str, int, int]]
) -> tuple[list[Line], Counters]:
    """The budget counters a job charges (rate limits are per minute: not a job's business)
    and their record: each alias's lines' worst cases added up, counters shared by several
    aliases' budgets charged once with the sum."""
    per_alias: dict[str, tuple[int, int]] = {}
    for alias, usd, tokens in worst:
        usd0, tokens0 = per_alias.get(alias, (0, 0))
        per_alias[alias] = (usd0 + usd, tokens0 + tokens)
    planner = guard_of(runtime).planner()
    merged: dict[str, tuple[Line, list[str]]] = {}
    for alias, (usd, tokens) in per_alias.items():
        for line in planner.lines(principal, alias, Ask(usd_nanos=usd, tokens=tokens)):
            if line.kind != "budget":
                continue
            held = merged.get(line.charge.key)
            if held is None:
                merged[line.charge.key] = (line, [alias])
                continue
            total = held[0].charge.amount + line.charge.amount
            charge = dataclasses.replace(held[0].charge, amount=total)
            merged[line.charge.key] = (dataclasses.replace(held[0], charge=charge),
                                       [*held[1], alias])  # fmt: skip
    lines = [line for line, _ in merged.values()]
    record = [[line.charge.key, line.unit, line.charge.amount, line.charge.ttl, aliases]
              for line, aliases in merged.values()]  # fmt: skip
    return lines, record


async def reserve(runtime: Runtime, lines: Sequence[Line]) -> Hold | Denial:
    return await guard_of(runtime).limits.ledger.reserve(lines, lasting=True)


def refusal(runtime: Runtime, denial: Denial) -> str:
    limits = guard_of(runtime).limits
    return denial.line.describe(limits.zone, denial.current, limits.ledger.clock())


@dataclass
class LineShare:
    """One line's part of its job's reservation. The budgets policy hands it what the line
    spent (`settle`); the runner `apply`s it once the line's result is written (never for a
    result another gateway wrote first)."""

    counters: Counters
    alias: str
    worst_nanousd: int
    worst_tokens: int
    spent: Spent | None = None
    told: bool = False

    def settle(self, spent: Spent | None) -> None:
        self.spent, self.told = spent, True

    def apply(self, ledger: Ledger) -> None:
        spent = self.spent if self.told else None
        ledger.settle_reserved(self._deltas(spent), spent)

    def _deltas(self, spent: Spent | None) -> list[tuple[str, int, int, int]]:
        out = []
        for key, unit, _, ttl, aliases in self.counters:
            if self.alias not in aliases:
                continue
            worst = self.worst_nanousd if unit == "usd" else self.worst_tokens
            actual = 0 if spent is None else spent.usd_nanos if unit == "usd" else spent.tokens
            out.append((key, worst, actual, ttl))
        return out


def release_unrun(
    ledger: Ledger, counters: Counters, unrun: Iterable[tuple[str, int, int]]
) -> None:
    """Lines that never ran (cancelled, expired): their worst cases go back, in one step."""
    back: dict[str, int] = {}
    for alias, usd, tokens in unrun:
        for key, unit, _, _, aliases in counters:
            if alias in aliases:
                back[key] = back.get(key, 0) + (usd if unit == "usd" else tokens)
    ttl = {key: t for key, _, _, t, _ in counters}
    ledger.settle_reserved([(k, amount, 0, ttl[k]) for k, amount in back.items() if amount],
                           None)  # fmt: skip
