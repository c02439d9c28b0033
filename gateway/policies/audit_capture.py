"""How much content the audit log keeps for the calls a policy entry selects.

`none` (the default without this policy): no content, only the prompt's hash. `hash`: hashes
of the request and response bodies. `redacted`: both bodies stored with secrets and personal
data masked. `full`: both bodies stored as sent. Entries later in the chain override earlier
ones, so a broad default can be followed by stricter or looser rules for some teams or models.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator

from gateway.audit.redact import BUILTIN, Redactor
from gateway.call import Call, Verdict
from gateway.policies.base import PluginContext, PluginOptions, PolicyPlugin


class CaptureOptions(PluginOptions):
    content: Literal["none", "hash", "redacted", "full"]
    teams: tuple[str, ...] | None = None
    keys: tuple[str, ...] | None = None
    models: tuple[str, ...] | None = None
    redact: tuple[str, ...] = tuple(BUILTIN)
    patterns: dict[str, str] = Field(default_factory=dict)

    @field_validator("redact")
    @classmethod
    def _known(cls, names: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [n for n in names if n not in BUILTIN]
        if unknown:
            raise ValueError(f"unknown pattern {unknown[0]!r} (built-in: {', '.join(BUILTIN)})")
        return names

    @field_validator("patterns")
    @classmethod
    def _compiles(cls, patterns: dict[str, str]) -> dict[str, str]:
        for name, pattern in patterns.items():
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"pattern {name!r} is not a valid regex: {exc}") from exc
        return patterns


class AuditCapture(PolicyPlugin):
    name = "audit_capture"
    Options = CaptureOptions
    options: CaptureOptions

    def __init__(self, options: CaptureOptions, context: PluginContext) -> None:
        super().__init__(options, context)
        self._redactor = Redactor(options.redact, options.patterns)

    async def on_request(self, call: Call) -> Verdict | None:
        o = self.options
        p = call.principal
        if (
            (o.teams is None or p.team in o.teams)
            and (o.keys is None or p.name in o.keys)
            and (o.models is None or call.model in o.models)
        ):
            call.capture = o.content
            call.redact = self._redactor if o.content == "redacted" else None
        return None
