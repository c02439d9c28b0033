"""Request bodies as the edge accepts them: JSON objects of bounded depth, and the fields the
gateway reads or translates in the shapes the vendors' APIs accept.

Anything else is a 400 in the dialect's shape before it becomes a call, so no request body can
make a later stage raise (a 500 that skips auditing and leaves a reservation held), recurse
without bound, or log a traceback per request.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from gateway.accounting.request_size import completions
from gateway.errors import InvalidRequest

# OpenAI and Anthropic refuse bodies nested much less deeply than orjson's limit (254); the
# deepest legitimate bodies are JSON schemas in tools and response formats.
MAX_DEPTH = 64


def parse_json_object(raw: bytes) -> dict[str, Any]:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"We could not parse the JSON body of your request: {exc}") from exc
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    _check_depth(body)
    return body


def _check_depth(body: dict[str, Any]) -> None:
    """Walks containers only (strings and numbers are skipped), with an explicit stack."""
    stack: list[tuple[Any, int]] = [(body, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise InvalidRequest(
                f"The request body nests more than {MAX_DEPTH} levels deep.",
                code="nesting_too_deep",
            )
        values = node.values() if isinstance(node, dict) else node
        stack.extend((v, depth + 1) for v in values if isinstance(v, dict | list))


def require(ok: bool, message: str, param: str) -> None:
    if not ok:
        raise InvalidRequest(message, param=param)


def list_of(value: Any, item: Callable[[Any], bool]) -> bool:
    return isinstance(value, list) and all(item(v) for v in value)


def is_object(value: Any) -> bool:
    return isinstance(value, dict)


def is_text(value: Any) -> bool:
    return isinstance(value, str)


def _has_function(value: Any) -> bool:
    return is_object(value) and is_object(value.get("function"))


def check_openai_chat(body: dict[str, Any]) -> None:
    """The chat fields a translation to Anthropic (or the gateway itself) reads."""
    stop = body.get("stop")
    require(
        stop is None or isinstance(stop, str) or list_of(stop, is_text),
        "'stop' must be a string or an array of strings.",
        "stop",
    )
    tools = body.get("tools")
    require(
        tools is None or list_of(tools, _has_function),
        "'tools' must be an array of objects with a 'function' object.",
        "tools",
    )
    for i, message in enumerate(body["messages"]):
        calls = message.get("tool_calls")
        require(
            calls is None
            or list_of(calls, lambda c: is_object(c) and is_object(c.get("function"))),
            f"'messages[{i}].tool_calls' must be an array of tool call objects.",
            f"messages[{i}].tool_calls",
        )
        content = message.get("content")
        require(
            content is None or isinstance(content, str) or list_of(content, is_object),
            f"'messages[{i}].content' must be a string or an array of content parts.",
            f"messages[{i}].content",
        )


def check_anthropic_messages(body: dict[str, Any]) -> None:
    """The Messages fields a translation to OpenAI (or the gateway itself) reads."""
    stops = body.get("stop_sequences")
    require(
        stops is None or list_of(stops, is_text),
        "stop_sequences: Input should be a valid list of strings",
        "stop_sequences",
    )
    tools = body.get("tools")
    require(
        tools is None or list_of(tools, lambda t: is_object(t) and is_text(t.get("name"))),
        "tools: Input should be a valid list of tools, each with a name",
        "tools",
    )
    choice = body.get("tool_choice")
    require(
        choice is None or is_object(choice), "tool_choice: Input should be an object", "tool_choice"
    )
    system = body.get("system")
    require(
        system is None or isinstance(system, str) or list_of(system, is_object),
        "system: Input should be a string or a list of text blocks",
        "system",
    )
    for i, message in enumerate(body["messages"]):
        content = message["content"]
        if isinstance(content, str):
            continue
        for j, block in enumerate(content):
            where = f"messages.{i}.content.{j}"
            require(is_object(block), f"{where}: Input should be a content block", where)
            if block.get("type") == "image":
                source = block.get("source")
                require(is_object(source), f"{where}.source: Input should be an object", where)
            if block.get("type") == "tool_use":
                require(
                    is_object(block.get("input", {})),
                    f"{where}.input: Input should be an object",
                    where,
                )


def check_completions(endpoint: str, body: dict[str, Any], limit: int) -> None:
    """A bound on what one request can make a backend generate (`server.max_completions`)."""
    count = completions(endpoint, body)
    if count > limit:
        raise InvalidRequest(
            f"This request asks for {count} completions (n, best_of and prompts multiplied); "
            f"this gateway allows at most {limit} per request.",
            param="n",
        )
