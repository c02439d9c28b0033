"""OpenAI's Responses API: `POST /v1/responses` as a call like any other (keys, rules, budgets,
audit, telemetry), plus the stored responses (`GET`, `DELETE`, `input_items`).

Conversation state is Tollgate's, whatever serves the call: a stored response keeps the whole
conversation so far, and a `previous_response_id` puts it before the new input (only for the
key that created it). The backend then gets the whole conversation: translated to chat for a
backend without the Responses API (backends/bridge.py), as it is for one with it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import orjson

from gateway.api.openai import OpenAIEndpoint
from gateway.call import Call
from gateway.dialects.responses_api import input_items, item_type, new_id
from gateway.dialects.responses_stream import FINAL_EVENTS
from gateway.errors import InvalidRequest
from gateway.pipeline import Reply
from gateway.runtime import Runtime
from gateway.services import Services
from gateway.stores.responses import StoredResponse, load, save

log = logging.getLogger("gateway.responses")
_ROLES = frozenset({"user", "assistant", "system", "developer"})
_STATE = "responses"


def not_found(ident: str, param: str | None = None) -> InvalidRequest:
    what = "Previous response" if param else "Response"
    return InvalidRequest(
        f"{what} with id '{ident}' not found.", param=param, status=404, code="not_found"
    )


class ResponsesEndpoint(OpenAIEndpoint):
    """OpenAI's ids and errors; its own body, and the stored conversation around the call."""

    def __init__(self) -> None:
        super().__init__("responses")

    def check(self, body: dict[str, Any], runtime: Runtime) -> None:
        check_request(body)

    def wants_usage(self, body: dict[str, Any]) -> bool:
        return True  # a Response carries its usage: never hidden

    async def before(self, call: Call, services: Services, runtime: Runtime) -> None:
        """The whole conversation as the input, this turn's items kept aside for storing."""
        settings = runtime.config.responses
        items = input_items(call.body)
        store = call.body.get("store") is not False and settings.store
        previous_id = call.body.get("previous_response_id")
        earlier: list[dict[str, Any]] = []
        if previous_id is not None:
            if not settings.store:
                raise InvalidRequest(
                    "previous_response_id is not available: this gateway keeps no responses "
                    "(responses.store is false).",
                    param="previous_response_id",
                )
            found = await asyncio.to_thread(
                load, services.accounts.engine, previous_id, call.principal.key_id, time.time()
            )
            if found is None:
                raise not_found(previous_id, "previous_response_id")
            earlier = found.conversation
        call.body["input"] = [*earlier, *items]
        call.state[_STATE] = (items, earlier, store)

    async def after(self, reply: Reply, call: Call, services: Services, runtime: Runtime) -> None:
        items, earlier, store = call.state.pop(_STATE)
        if not store or reply.status >= 400:
            return
        keeper = _Keeper(services, runtime, call, items, earlier)
        if reply.stream is None:
            await keeper.keep(_parsed(reply.body))
        else:
            reply.stream.on_final = keeper.keep_final


class _Keeper:
    """Stores one turn once its response is known, before the client has it (a client that
    continues at once finds it)."""

    def __init__(
        self,
        services: Services,
        runtime: Runtime,
        call: Call,
        items: list[dict[str, Any]],
        earlier: list[dict[str, Any]],
    ) -> None:
        self._engine = services.accounts.engine
        self._days = runtime.config.responses.retention_days
        self._call = call
        self._items = items
        self._earlier = earlier

    async def keep_final(self, chunk: bytes) -> None:
        await self.keep(_final_response(chunk))

    async def keep(self, response: dict[str, Any] | None) -> None:
        if response is None or not isinstance(response.get("id"), str):
            return
        previous = self._call.body.get("previous_response_id")
        if response.get("previous_response_id") is None and previous is not None:
            response["previous_response_id"] = previous
        output = [o for o in response.get("output") or () if isinstance(o, dict)]
        now = time.time()
        stored = StoredResponse(
            id=response["id"],
            key_id=self._call.principal.key_id,
            created_at=now,
            expires_at=now + self._days * 86_400,
            model=self._call.model,
            response=response,
            input_items=[_with_id(i) for i in self._items],
            conversation=[*self._earlier, *self._items, *output],
        )
        try:
            await asyncio.to_thread(save, self._engine, stored)
        except Exception:  # the answer still goes out (and the call is settled); not kept
            log.exception("storing response %s failed: it cannot be retrieved or continued",
                          stored.id)  # fmt: skip


def _parsed(body: bytes) -> dict[str, Any] | None:
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return parsed if isinstance(parsed, dict) else None


def _final_response(chunk: bytes) -> dict[str, Any] | None:
    """The Response a stream's final event carries."""
    for marker in FINAL_EVENTS:
        at = chunk.rfind(marker)
        if at < 0:
            continue
        start = chunk.find(b"data:", at)
        end = chunk.find(b"\n", start)
        event = _parsed(chunk[start + 5 : end if end >= 0 else len(chunk)].strip())
        response = event.get("response") if event is not None else None
        return response if isinstance(response, dict) else None
    return None


def _with_id(item: dict[str, Any]) -> dict[str, Any]:
    """An input item as `input_items` lists it: with an id, and a message's text as a content
    part (`input_text`; `output_text` for the assistant's), as OpenAI lists them."""
    kind = item_type(item)
    prefix = {"message": "msg", "function_call_output": "fco", "function_call": "fc"}.get(kind)
    listed = {"id": new_id(prefix or "item"), **item}
    if kind == "message":
        listed["type"] = "message"
        listed.setdefault("status", "completed")
        if isinstance(item.get("content"), str):
            part = "output_text" if item.get("role") == "assistant" else "input_text"
            listed["content"] = [{"type": part, "text": item["content"]}]
    return listed


def check_request(body: dict[str, Any]) -> None:
    """The fields Tollgate reads or translates (past `model`, which every OpenAI endpoint
    checks), in the shapes OpenAI accepts (400 otherwise)."""
    raw = body.get("input")
    if raw is None:
        raise InvalidRequest("Missing required parameter: 'input'.", param="input")
    if not isinstance(raw, str | list):
        raise InvalidRequest("'input' must be a string or an array of items.", param="input")
    for i, item in enumerate(raw if isinstance(raw, list) else ()):
        _check_item(item, f"input[{i}]")
    for name, kinds, what in (
        ("instructions", str, "a string"),
        ("previous_response_id", str, "a string"),
        ("stream", bool, "a boolean"),
        ("store", bool, "a boolean"),
        ("tools", list, "an array"),
        ("metadata", dict, "an object"),
    ):
        value = body.get(name)
        if value is not None and not isinstance(value, kinds):
            raise InvalidRequest(f"'{name}' must be {what}.", param=name)
    limit = body.get("max_output_tokens")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise InvalidRequest("'max_output_tokens' must be a positive integer.",
                             param="max_output_tokens")  # fmt: skip
    for i, tool in enumerate(body.get("tools") or ()):
        if not isinstance(tool, dict) or not isinstance(tool.get("type"), str):
            raise InvalidRequest(f"'tools[{i}]' must be an object with a 'type'.",
                                 param=f"tools[{i}]")  # fmt: skip
        if tool["type"] == "function" and not isinstance(tool.get("name"), str):
            raise InvalidRequest(f"Missing required parameter: 'tools[{i}].name'.",
                                 param=f"tools[{i}].name")  # fmt: skip


def _check_item(item: Any, where: str) -> None:
    if not isinstance(item, dict):
        raise InvalidRequest(f"'{where}' must be an object.", param=where)
    kind = item_type(item)
    if kind == "message":
        if item.get("role") not in _ROLES:
            raise InvalidRequest(
                f"'{where}.role' must be one of: user, assistant, system, developer.",
                param=f"{where}.role",
            )
        content = item.get("content")
        if not isinstance(content, str | list) or (
            isinstance(content, list) and not all(isinstance(p, dict) for p in content)
        ):
            raise InvalidRequest(f"'{where}.content' must be a string or an array of parts.",
                                 param=f"{where}.content")  # fmt: skip
    elif kind in ("function_call", "function_call_output"):
        if not isinstance(item.get("call_id"), str):
            raise InvalidRequest(f"Missing required parameter: '{where}.call_id'.",
                                 param=f"{where}.call_id")  # fmt: skip
        if kind == "function_call" and not isinstance(item.get("name"), str):
            raise InvalidRequest(f"Missing required parameter: '{where}.name'.",
                                 param=f"{where}.name")  # fmt: skip
        if kind == "function_call_output" and "output" not in item:
            raise InvalidRequest(f"Missing required parameter: '{where}.output'.",
                                 param=f"{where}.output")  # fmt: skip
