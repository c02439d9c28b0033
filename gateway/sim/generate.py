"""What the simulator answers, decided before any time passes: per prompt, its completions
(words, JSON that fits the requested schema, or tool calls whose arguments fit the tool's),
why each ends, and the token ids the replica prefills. The same request always plans the
same content; only ids (tool calls, responses) are fresh each time, as the real APIs' are.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import orjson

from gateway.accounting.tokens import TokenCounter
from gateway.sim.config import SimModel
from gateway.sim.requests import Ask, Tool, check_size, invalid
from gateway.sim.structured import value_for
from gateway.sim.text import apply_stop, seed_of, words

_TEMPLATE_BASE = 90_000  # token ids standing for a chat template's own tokens


@dataclass(frozen=True, slots=True)
class Choice:
    """One completion: its pieces (one token each), why it ends, and its tool calls."""

    pieces: tuple[str, ...]
    finish_reason: str  # stop | length | tool_calls
    tool_calls: tuple[dict[str, object], ...] = ()
    stop: str | None = None  # the stop sequence that ended it
    tokens: int = 0  # completion tokens billed

    @property
    def text(self) -> str:
        return "".join(self.pieces)


@dataclass(frozen=True, slots=True)
class Planned:
    choices: list[Choice]  # returned: n per prompt, prompt by prompt
    prompt_ids: list[int]  # what the replica prefills (every prompt)
    prompt_tokens: int
    completion_tokens: int  # billed: every completion generated (best_of included)

    @property
    def longest(self) -> int:
        return max((len(c.pieces) for c in self.choices), default=0)


def plan(ask: Ask, model: SimModel, tokens: TokenCounter, seed: int, chat: bool) -> Planned:
    if model.kind != "chat":
        raise invalid(f"{model.name} is an embedding model")
    template = list(range(_TEMPLATE_BASE, _TEMPLATE_BASE + model.template_tokens)) if chat else []
    encoded = [template + tokens.encode(prompt) for prompt in ask.prompts]
    check_size(ask, max(len(e) for e in encoded), model.max_model_len)
    returned: list[Choice] = []
    billed = 0
    for prompt in ask.prompts:
        for index in range(ask.generated):
            choice_seed = seed_of(seed, ask.seed, prompt, index)
            if model.fidelity < 1.0 and _unfaithful(choice_seed, model.fidelity):
                choice_seed = seed_of("unfaithful", choice_seed)  # another answer altogether
            choice = _choice(ask, model, tokens, choice_seed)
            billed += choice.tokens
            if index < ask.n:
                returned.append(choice)
    ids = [i for group in encoded for i in group]
    return Planned(returned, ids, len(ids), billed)


def _unfaithful(seed: int, fidelity: float) -> bool:
    """Whether this answer departs from the reference's: decided by the request (so the same
    request gets the same verdict), a `1 - fidelity` share of requests."""
    return (seed_of("fidelity", seed) % 10_000) / 10_000 >= fidelity


def _choice(ask: Ask, model: SimModel, tokens: TokenCounter, seed: int) -> Choice:
    tool = _forced_tool(ask)
    if tool is not None:
        arguments = orjson.dumps(value_for(tool.schema, seed)).decode()
        call: dict[str, object] = {
            "id": "call_" + uuid.uuid4().hex[:24],
            "type": "function",
            "function": {"name": tool.name, "arguments": arguments},
        }
        return Choice((), "tool_calls", (call,), tokens=tokens.count(arguments))
    limit = ask.max_tokens or model.default_max_tokens
    natural = ask.max_tokens is None
    if ask.json_mode:
        value = (
            value_for(ask.json_schema, seed)
            if ask.json_schema is not None
            else {"answer": "".join(words(seed, 6)).strip()}
        )
        text = orjson.dumps(value).decode()
        pieces = [text[i : i + 4] for i in range(0, len(text), 4)]
        if len(pieces) > limit:
            return Choice(tuple(pieces[:limit]), "length", tokens=limit)
        return Choice(tuple(pieces), "stop", tokens=len(pieces))
    kept, matched = apply_stop(words(seed, limit), ask.stops)
    reason = "stop" if matched is not None or natural else "length"
    return Choice(tuple(kept), reason, stop=matched, tokens=len(kept))


def _forced_tool(ask: Ask) -> Tool | None:
    """The tool a call must use: the named one, or the first when any is required."""
    if not ask.tools or ask.tool_choice in ("auto", "none"):
        return None
    if ask.tool_choice == "required":
        return ask.tools[0]
    return next((t for t in ask.tools if t.name == ask.tool_choice), None)
