"""The contract every policy plugin satisfies, built-in or third-party.

Ordering: `on_request` runs in chain order; the first Deny or Answer stops the chain (a Route is
applied and the chain goes on, so later plugins such as budgets see the chosen route).
`on_response` runs in reverse order, only for plugins whose `on_request` ran.
Blocking: hooks are async and must not block the event loop.
Raising: `on_request` may raise a TollgateError to fail the call with that error; any other
exception fails the call with a 500. `on_response` must not raise: errors are logged and counted.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from pydantic import BaseModel, ConfigDict

from gateway.accounting.context import LimitsContext
from gateway.accounting.tokens import TokenCounter
from gateway.call import Call, Outcome, Verdict

# PolicyView is re-exported: a plugin's references() check is typed with it from here.
from gateway.config.plugins import PolicyView as PolicyView


class PluginOptions(BaseModel):
    """Base for a plugin's `with:` block: strict, frozen, unknown keys rejected."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class SideCalls(Protocol):
    """Runs a call of the gateway's own through the whole pipeline (policies, budgets,
    routing, audit), off any client's request path: a quality guard's reference call."""

    async def run(self, call: Call) -> tuple[int, bytes]:
        """The status and body the call was answered with (a refusal: its status, no body)."""
        ...


@dataclass(frozen=True, slots=True)
class PluginContext:
    """What a plugin may use, handed over when the runtime is built (never globals)."""

    tokens: TokenCounter
    models: frozenset[str]
    limits: LimitsContext | None = None
    tiers: Mapping[str, frozenset[str]] = field(default_factory=dict)  # alias -> its tiers
    references: Mapping[str, str | None] = field(default_factory=dict)  # alias -> its tier
    side_calls: SideCalls | None = None
    # State that must outlive a reload (a quality guard's samples, a suspension), by name.
    keep: dict[str, Any] = field(default_factory=dict)


class Plugin(Protocol):
    name: ClassVar[str]
    Options: ClassVar[type[BaseModel]]

    async def on_request(self, call: Call) -> Verdict | None: ...

    async def on_response(self, call: Call, outcome: Outcome) -> None: ...

    async def aclose(self) -> None: ...


class PolicyPlugin:
    """Convenience base: no-op response hook and close; subclasses set name, Options, on_request."""

    name: ClassVar[str] = ""
    Options: ClassVar[type[BaseModel]] = PluginOptions
    # True for a cache: its request hook is traced as a `cache lookup` span.
    lookup: ClassVar[bool] = False

    def __init__(self, options: Any, context: PluginContext) -> None:
        self.options = options
        self.context = context

    async def on_request(self, call: Call) -> Verdict | None:
        return None

    async def on_response(self, call: Call, outcome: Outcome) -> None:
        return None

    async def aclose(self) -> None:
        return None
