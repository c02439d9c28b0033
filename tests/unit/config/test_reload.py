"""Hot reload, in process: saves are read once they have settled, drastic changes need a
deliberate SIGHUP, new policy files are found, every reload says what changed, nothing a
reload throws kills the watcher, and a replaced runtime is closed once its calls are done."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest

from gateway.accounting.tokens import TokenCounter
from gateway.config.loader import LoadedConfig, load_config
from gateway.config.reload import Reloader
from gateway.runtime import Runtime, RuntimeDeps, RuntimeRef, build_runtime
from tests.support.runtime import make_deps
from tests.support.wait import eventually

BASE = """\
version: 1
auth: {mode: open}
backends:
  sim: {type: sim, models: [{name: m}]}
models:
  chat: {backend: sim, model: m}
policy_files: ["policies/*.yaml"]
limits:
  budgets:
    - {name: team-ml, scope: team, subject: ml, usd: 5, window: day}
"""
POLICY = "policies:\n  - use: max_tokens\n    with: {limit: 64}\n"
POLL = 0.02
Builder = Callable[[LoadedConfig, Runtime | None], Runtime]


class Env:
    def __init__(self, root: Path, deps: RuntimeDeps) -> None:
        self.root = root
        self.path = root / "tollgate.yaml"
        (root / "policies").mkdir()
        (root / "policies" / "10-caps.yaml").write_text(POLICY)
        self.path.write_text(BASE)
        self.deps = deps
        self.ref = RuntimeRef(build_runtime(load_config(self.path, env={}), deps))

    def reloader(self, settle: float = 0.1, build: Builder | None = None) -> Reloader[Runtime]:
        def rebuild(loaded: LoadedConfig, old: Runtime | None) -> Runtime:
            return build_runtime(loaded, self.deps, old)

        return Reloader(str(self.path), self.ref, build or rebuild, POLL, settle)

    @property
    def generation(self) -> int:
        return self.ref.current.generation


@pytest.fixture
async def env(tmp_path: Path, tokens: TokenCounter) -> AsyncIterator[Env]:
    transport = httpx.AsyncHTTPTransport()
    made = Env(tmp_path, make_deps(transport, tokens))
    yield made
    await made.ref.current.aclose()
    await transport.aclose()


async def test_a_save_is_read_only_once_it_has_settled(env: Env) -> None:
    reloader = env.reloader(settle=1.0)
    reloader.start()
    try:
        # A slow save: the file changes every 0.05 s (half-written states in between), far
        # more often than the settling time; nothing is read until it stops changing.
        for i in range(5):
            env.path.write_text(BASE.replace("usd: 5", f"usd: {i + 10}")[: 150 + i])
            await asyncio.sleep(0.05)
            assert reloader.attempts == 0, "read before the file settled"
        env.path.write_text(BASE.replace("usd: 5", "usd: 7"))
        await eventually(lambda: env.generation == 2)
        assert reloader.attempts == 1
        assert env.ref.current.config.limits.budgets[0].usd == 7
    finally:
        await reloader.aclose()


async def test_a_watched_change_that_removes_every_limit_needs_sighup(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    reloader = env.reloader()
    reloader.start()
    try:
        with caplog.at_level(logging.INFO, logger="gateway.config"):
            env.path.write_text(BASE.split("limits:")[0])
            await eventually(lambda: reloader.failures == 1)
        assert env.generation == 1 and env.ref.current.config.limits.budgets
        refused = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
        assert refused and "every budget and rate limit" in refused[0]
        assert "send SIGHUP" in refused[0]
        assert await reloader.reload(deliberate=True)  # what SIGHUP does
        assert env.generation == 2 and not env.ref.current.config.limits.budgets
    finally:
        await reloader.aclose()


async def test_a_new_policy_file_is_picked_up_and_the_log_says_what_changed(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    reloader = env.reloader()
    reloader.start()
    try:
        with caplog.at_level(logging.INFO, logger="gateway.config"):
            (env.root / "policies" / "20-budgets.yaml").write_text(
                "budgets:\n  - {name: key-cap, scope: key, subject: '*', usd: 1}\n"
            )
            await eventually(lambda: env.generation == 2)
        messages = [r.getMessage() for r in caplog.records]
        changed = next(m for m in messages if m.startswith("configuration changed"))
        assert "20-budgets.yaml added" in changed
        reloaded = next(m for m in messages if m.startswith("configuration reloaded"))
        assert "budgets: 1 -> 2; added key-cap" in reloaded
        assert "policy files: 1 -> 2" in reloaded
    finally:
        await reloader.aclose()


async def test_an_exception_while_building_keeps_the_config_and_the_watcher(env: Env) -> None:
    calls: list[int] = []

    def flaky(loaded: LoadedConfig, old: Runtime | None) -> Runtime:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("a third-party plugin's __init__ failed")
        return build_runtime(loaded, env.deps, old)

    reloader = env.reloader(build=flaky)
    reloader.start()
    try:
        env.path.write_text(BASE.replace("usd: 5", "usd: 6"))
        await eventually(lambda: reloader.failures == 1)
        assert env.generation == 1
        env.path.write_text(BASE.replace("usd: 5", "usd: 8"))
        await eventually(lambda: env.generation == 2)
        assert env.ref.current.config.limits.budgets[0].usd == 8
    finally:
        await reloader.aclose()


async def test_a_replaced_runtime_is_closed_once_its_calls_are_done(env: Env) -> None:
    closed: list[str] = []
    old = env.ref.current
    for entry in old.chain.entries():
        plugin = entry.plugin

        async def record(name: str = entry.label) -> None:
            closed.append(name)

        plugin.aclose = record  # type: ignore[method-assign]
    old.calls.enter()  # a call (a long stream, say) still running on the old config
    reloader = env.reloader()
    try:
        assert await reloader.reload()
        await asyncio.sleep(0.05)
        assert closed == []
        old.calls.leave()
        await eventually(lambda: closed == ["max_tokens", "budgets"])
    finally:
        await reloader.aclose()
