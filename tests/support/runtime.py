"""Runtimes for in-process tests: the same build_runtime the server uses, with test stores."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx

from gateway.accounting.ledger import Ledger
from gateway.accounting.tokens import TokenCounter
from gateway.auth import KeyRing
from gateway.budget_rules import BudgetRule
from gateway.config.loader import load_config
from gateway.routing.state import ReplicaStates
from gateway.runtime import Runtime, RuntimeDeps, build_runtime
from gateway.stores.counters import CounterStore
from gateway.stores.memory import MemoryCounters


def make_deps(
    transport: httpx.AsyncBaseTransport,
    tokens: TokenCounter,
    *,
    store: CounterStore | None = None,
    on_failure: str = "closed",
    clock: Callable[[], float] = time.time,
    zone: str = "UTC",
    sql_budgets: Callable[[], tuple[BudgetRule, ...]] = tuple,
    ring: KeyRing | None = None,
    replicas: ReplicaStates | None = None,
) -> RuntimeDeps:
    ledger = Ledger(
        store if store is not None else MemoryCounters(clock),
        on_failure,  # type: ignore[arg-type]
        ZoneInfo(zone),
        clock=clock,
    )
    return RuntimeDeps(
        transport=transport,
        tokens=tokens,
        ring=ring or KeyRing(b"test-secret"),
        ledger=ledger,
        sql_budgets=sql_budgets,
        replicas=replicas if replicas is not None else ReplicaStates(),
    )


def runtime_from(path: Path, text: str, deps: RuntimeDeps) -> Runtime:
    path.write_text(text)
    return build_runtime(load_config(path, env={}), deps)
