"""Caps how many tokens one call may generate: the simplest cost guard there is."""

from __future__ import annotations

from pydantic import Field

from gateway.accounting.request_size import OUTPUT_FIELDS, output_field
from gateway.call import NOTICE, Call, Decision, Deny, Verdict
from gateway.policies.base import PluginOptions, PolicyPlugin


class MaxTokensOptions(PluginOptions):
    limit: int = Field(ge=1)
    action: str = Field("clamp", pattern="^(clamp|deny)$")
    default: int | None = Field(None, ge=1)
    teams: dict[str, int] = Field(default_factory=dict)
    keys: dict[str, int] = Field(default_factory=dict)


class MaxTokensCap(PolicyPlugin):
    """Per-key and per-team output caps, with a default injected when the client sets none.

    Clamping rewrites the request (recorded as a decision); `deny` refuses it with a 400.
    """

    name = "max_tokens"
    Options = MaxTokensOptions
    options: MaxTokensOptions

    async def on_request(self, call: Call) -> Verdict | None:
        if call.endpoint == "embeddings":
            return None
        limit = self._limit_for(call)
        field = next((f for f in OUTPUT_FIELDS if call.body.get(f) is not None), None)
        if field is None:
            if self.options.default is not None:
                value = min(self.options.default, limit)
                field = output_field(call.endpoint, call.body)
                call.body[field] = value
                call.decide(Decision(self.name, "modify", f"{field} defaulted to {value}"))
            return None
        requested = call.body[field]
        if not isinstance(requested, int) or requested <= limit:
            return None
        if self.options.action == "deny":
            return Deny(
                f"{field}={requested} exceeds this key's limit of {limit}",
                status=400,
                code="max_tokens_exceeded",
                error_type="invalid_request_error",
            )
        call.body[field] = limit
        call.decide(Decision(self.name, "modify", f"{field} clamped from {requested} to {limit}"))
        # Told to the client too (x-tollgate-max-tokens), so a short answer is explained.
        call.labels[f"{NOTICE}max-tokens"] = f"{limit}; requested={requested}"
        return None

    def _limit_for(self, call: Call) -> int:
        principal = call.principal
        if principal.name in self.options.keys:
            return self.options.keys[principal.name]
        if principal.team is not None and principal.team in self.options.teams:
            return self.options.teams[principal.team]
        return self.options.limit
