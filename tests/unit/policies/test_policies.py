from __future__ import annotations

from typing import Any, ClassVar

import pytest

from gateway.accounting.tokens import TokenCounter
from gateway.call import Answer, Call, Deny, Outcome, Route, Target, Verdict
from gateway.config.plugins import PluginLoadError
from gateway.config.plugins import policy as resolve
from gateway.config.plugins import verify_policy as verify
from gateway.errors import InternalError
from gateway.policies.base import PluginContext, PluginOptions, PolicyPlugin
from gateway.policies.chain import ChainEntry, PolicyChain
from gateway.policies.max_tokens import MaxTokensCap, MaxTokensOptions


def make_call(**body: Any) -> Call:
    return Call(
        request_id="r",
        dialect="openai",
        endpoint="chat.completions",
        model="chat",
        body={"model": "chat", "messages": [], **body},
        stream=False,
        client_wants_usage=False,
    )


class Scripted(PolicyPlugin):
    name = "scripted"
    log: ClassVar[list[str]] = []

    def __init__(
        self, label: str, verdict: Verdict | None = None, fail_response: bool = False
    ) -> None:
        self.label, self.verdict, self.fail_response = label, verdict, fail_response

    async def on_request(self, call: Call) -> Verdict | None:
        self.log.append(f"req:{self.label}")
        return self.verdict

    async def on_response(self, call: Call, outcome: Outcome) -> None:
        self.log.append(f"resp:{self.label}")
        if self.fail_response:
            raise RuntimeError("boom")


def chain(*plugins: tuple[Scripted, bool]) -> PolicyChain:
    Scripted.log.clear()
    return PolicyChain([ChainEntry(p, p.label, shadow) for p, shadow in plugins])


async def test_deny_stops_the_chain_and_responses_run_in_reverse_for_those_that_ran() -> None:
    c = chain((Scripted("a"), False), (Scripted("b", Deny("no")), False), (Scripted("c"), False))
    call = make_call()
    verdict, ran = await c.on_request(call)
    assert isinstance(verdict, Deny) and ran == 2
    await c.on_response(call, Outcome(), ran)
    assert Scripted.log == ["req:a", "req:b", "resp:b", "resp:a"]
    assert [(d.plugin, d.action) for d in call.decisions] == [("b", "deny")]


async def test_route_applies_and_the_chain_goes_on() -> None:
    route = Route((Target("x", "m"),), reason="cheaper tier")
    c = chain((Scripted("r", route), False), (Scripted("z"), False))
    call = make_call()
    verdict, ran = await c.on_request(call)
    assert verdict is None and ran == 2
    assert call.route is route
    assert call.decisions[0].reason == "cheaper tier"


async def test_shadow_records_but_never_enforces() -> None:
    c = chain((Scripted("s", Deny("would deny")), True), (Scripted("t", Answer({})), True))
    call = make_call()
    verdict, _ = await c.on_request(call)
    assert verdict is None
    assert [(d.action, d.enforced) for d in call.decisions] == [("shadow", False)] * 2


async def test_response_hook_errors_are_counted_not_raised() -> None:
    c = chain((Scripted("a", fail_response=True), False))
    await c.on_response(make_call(), Outcome(), 1)
    assert c.response_errors == 1


async def test_request_hook_crash_becomes_internal_error() -> None:
    class Crashing(Scripted):
        async def on_request(self, call: Call) -> Verdict | None:
            raise ValueError("bug")

    c = chain((Crashing("x"), False))
    with pytest.raises(InternalError):
        await c.on_request(make_call())


def test_registry_resolves_builtins_and_rejects_bad_plugins() -> None:
    assert resolve("max_tokens") is MaxTokensCap
    with pytest.raises(PluginLoadError, match="unknown policy plugin"):
        resolve("nope")

    class SyncHook:
        Options = PluginOptions

        def on_request(self, call: Call) -> None: ...

    with pytest.raises(PluginLoadError, match="on_request must be an async method"):
        verify(SyncHook, "sync")

    class WrongArity(PolicyPlugin):
        async def on_response(self, call: Call) -> None:  # type: ignore[override]
            return None

    with pytest.raises(PluginLoadError, match="on_response takes 2"):
        verify(WrongArity, "arity")


def cap(**options: Any) -> MaxTokensCap:
    context = PluginContext(tokens=TokenCounter(), models=frozenset({"chat"}))
    return MaxTokensCap(MaxTokensOptions(**options), context)


async def test_max_tokens_clamps_defaults_and_denies() -> None:
    call = make_call(max_tokens=9000)
    assert await cap(limit=100).on_request(call) is None
    assert call.body["max_tokens"] == 100
    assert call.decisions[0].action == "modify"

    call = make_call()
    await cap(limit=100, default=50).on_request(call)
    assert call.body["max_tokens"] == 50

    verdict = await cap(limit=100, action="deny").on_request(make_call(max_completion_tokens=101))
    assert isinstance(verdict, Deny) and verdict.status == 400
    # The client's own request is at fault: said so, with what it sent.
    assert verdict.error_type == "invalid_request_error"
    assert "max_completion_tokens=101" in verdict.message

    call = make_call(max_tokens=500)
    from gateway.call import Principal

    call.principal = Principal(key_id="k", name="k", team="big")
    await cap(limit=100, teams={"big": 1000}).on_request(call)
    assert call.body["max_tokens"] == 500
