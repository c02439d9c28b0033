"""Requests to the simulator, checked as the real APIs check them, into one dialect-free Ask.

A request the real API refuses (an unknown role, a temperature of 3, `n: 500`) gets a 400 in
the API's own words here too, so clients and the gateway are tested against realistic errors;
and no request can make the simulator generate more than `MAX_GENERATED` tokens (a huge `n` x
`max_tokens` would otherwise take its process's memory).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from gateway.accounting.tokens import content_text

OPENAI_ROLES = ("system", "assistant", "user", "function", "tool", "developer")
MAX_N = 128
MAX_BEST_OF = 20
MAX_STOPS = 4
MAX_GENERATED = 1_000_000  # tokens one request may ask for in all (prompts x n x max_tokens)


class SimError(Exception):
    """An error the simulator answers with (HTTP status, the API's error type and words). The
    simulator stands in for a foreign server, so its errors are its own, not the gateway's."""

    def __init__(
        self,
        status: int,
        message: str,
        error_type: str,
        code: str | None = None,
        headers: dict[str, str] | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.error_type, self.code = status, message, error_type, code
        self.headers = headers or {}
        self.param = param


def invalid(message: str, param: str | None = None, code: str | None = None) -> SimError:
    return SimError(400, message, "invalid_request_error", code, param=param)


@dataclass(frozen=True, slots=True)
class Tool:
    name: str
    schema: Any


@dataclass(frozen=True, slots=True)
class Ask:
    """What to generate, whatever the dialect asked."""

    prompts: tuple[str, ...]
    n: int = 1
    generated: int = 1  # completions generated (and billed) per prompt: best_of >= n
    max_tokens: int | None = None
    stops: tuple[str, ...] = ()
    tools: tuple[Tool, ...] = ()
    tool_choice: str = "auto"  # auto | none | required | a tool's name
    json_schema: Any = None
    json_mode: bool = False
    seed: Any = None
    salt: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)


def _number(body: Mapping[str, Any], name: str, low: float, high: float) -> None:
    value = body.get(name)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise invalid(f"Invalid type for '{name}': expected a number.", name, "invalid_type")
    if value < low:
        raise invalid(
            f"Invalid '{name}': decimal below minimum value. Expected a value >= {low:g}, "
            f"but got {value} instead.",
            name,
            "decimal_below_min_value",
        )
    if value > high:
        raise invalid(
            f"Invalid '{name}': decimal above maximum value. Expected a value <= {high:g}, "
            f"but got {value} instead.",
            name,
            "decimal_above_max_value",
        )


def _count(body: Mapping[str, Any], name: str, high: int, default: int | None) -> int | None:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid(f"Invalid type for '{name}': expected an integer.", name, "invalid_type")
    if value < 1 or value > high:
        raise invalid(f"'{name}' must be between 1 and {high}, got {value}.", name)
    return value


def _stops(value: Any, name: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(s, str) for s in value):
        if len(value) > MAX_STOPS:
            raise invalid(f"'{name}' may hold at most {MAX_STOPS} sequences.", name)
        return tuple(value)
    raise invalid(f"'{name}' must be a string or a list of strings.", name, "invalid_type")


def openai_common(body: Mapping[str, Any], prompts: Sequence[str], generated: int = 1) -> Ask:
    for name, low, high in (
        ("temperature", 0, 2),
        ("top_p", 0, 1),
        ("presence_penalty", -2, 2),
        ("frequency_penalty", -2, 2),
    ):
        _number(body, name, low, high)
    n = _count(body, "n", MAX_N, 1) or 1
    max_tokens = _count(body, "max_completion_tokens", MAX_GENERATED, None) or _count(
        body, "max_tokens", MAX_GENERATED, None
    )
    salt = body.get("cache_salt")
    return Ask(
        prompts=tuple(prompts),
        n=n,
        generated=max(n, generated),
        max_tokens=max_tokens,
        stops=_stops(body.get("stop"), "stop"),
        seed=body.get("seed"),
        salt=salt if isinstance(salt, str) else None,
    )


def openai_chat(body: Mapping[str, Any]) -> Ask:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise invalid("'messages' must be a non-empty array.", "messages")
    parts = []
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise invalid(
                f"Invalid type for 'messages[{i}]': expected an object.", f"messages[{i}]"
            )
        role = message.get("role")
        if role not in OPENAI_ROLES:
            raise invalid(
                f"Invalid value: {role!r}. Supported values are: 'system', 'assistant', "
                "'user', 'function', 'tool', and 'developer'.",
                f"messages[{i}].role",
                "invalid_value",
            )
        parts.append(f"<|{role}|>{content_text(message.get('content'))}\n")
    ask = openai_common(body, ["".join(parts) + "<|assistant|>"])
    tools, choice = _openai_tools(body)
    schema, json_mode = _response_format(body.get("response_format"))
    return replace(ask, tools=tools, tool_choice=choice, json_schema=schema, json_mode=json_mode)


def openai_completion(body: Mapping[str, Any]) -> Ask:
    prompt = body.get("prompt")
    if isinstance(prompt, str):
        prompts = [prompt]
    elif isinstance(prompt, list) and prompt and all(isinstance(p, int) for p in prompt):
        prompts = [" ".join(map(str, prompt))]
    elif isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
        prompts = list(prompt)
    elif isinstance(prompt, list) and prompt and all(isinstance(p, list) for p in prompt):
        prompts = [" ".join(map(str, p)) for p in prompt]
    else:
        raise invalid("'prompt' must be a string, an array of strings, or token arrays.", "prompt")
    n = _count(body, "n", MAX_N, 1) or 1
    best_of = _count(body, "best_of", MAX_BEST_OF, None) or n
    if best_of < n:
        raise invalid("'best_of' must be greater than or equal to 'n'.", "best_of")
    return openai_common(body, prompts, best_of)


def _openai_tools(body: Mapping[str, Any]) -> tuple[tuple[Tool, ...], str]:
    raw = body.get("tools")
    tools = []
    if raw is not None:
        if not isinstance(raw, list):
            raise invalid("'tools' must be an array.", "tools", "invalid_type")
        for i, tool in enumerate(raw):
            fn = tool.get("function") if isinstance(tool, Mapping) else None
            if not isinstance(fn, Mapping) or not isinstance(fn.get("name"), str):
                raise invalid(f"'tools[{i}].function.name' is required.", f"tools[{i}]")
            tools.append(Tool(fn["name"], fn.get("parameters") or {"type": "object"}))
    choice = body.get("tool_choice", "auto")
    if isinstance(choice, Mapping):
        name = (choice.get("function") or {}).get("name")
        if not any(t.name == name for t in tools):
            raise invalid(f"Tool choice '{name}' is not among the tools.", "tool_choice")
        return tuple(tools), str(name)
    if choice not in ("auto", "none", "required"):
        raise invalid("'tool_choice' must be auto, none, required or a function.", "tool_choice")
    if choice == "required" and not tools:
        raise invalid("'tool_choice' is required but no tools were given.", "tool_choice")
    return tuple(tools), str(choice)


def _response_format(value: Any) -> tuple[Any, bool]:
    if value is None:
        return None, False
    kind = value.get("type") if isinstance(value, Mapping) else None
    if kind == "text":
        return None, False
    if kind == "json_object":
        return None, True
    if kind == "json_schema":
        spec = value.get("json_schema")
        if not isinstance(spec, Mapping) or not isinstance(spec.get("name"), str):
            raise invalid("'response_format.json_schema.name' is required.", "response_format")
        return spec.get("schema") or {"type": "object"}, True
    raise invalid(
        "'response_format.type' must be one of 'text', 'json_object', 'json_schema'.",
        "response_format",
    )


def check_size(ask: Ask, prompt_tokens: int, context: int) -> None:
    """No request may outgrow the model's context or the simulator's memory."""
    each = ask.max_tokens or 0
    total = len(ask.prompts) * ask.generated * max(each, 1)
    if total > MAX_GENERATED:
        raise invalid(
            f"This request asks for up to {total} generated tokens ({len(ask.prompts)} prompts x "
            f"{ask.generated} completions x {each} max tokens); the limit is {MAX_GENERATED}.",
            "max_tokens",
        )
    if prompt_tokens + each > context:
        raise invalid(
            f"This model's maximum context length is {context} tokens. However, you requested "
            f"{prompt_tokens + each} tokens ({prompt_tokens} in the messages, {each} in the "
            "completion). Please reduce the length of the messages or completion.",
            "messages",
            "context_length_exceeded",
        )
