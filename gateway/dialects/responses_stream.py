"""A chat completion stream said as the Responses API's typed events, chunk by chunk.

`response.created` and `response.in_progress` open; each text answer is a message item
(`output_item.added`, `content_part.added`, `output_text.delta`...), each tool call a
function_call item (`function_call_arguments.delta`...); at the end every open item is closed
(`...done` events) and `response.completed` (or `response.incomplete` when the output limit
cut it) carries the whole Response with its usage. Every event has its `sequence_number`.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from gateway.call import Usage
from gateway.dialects.responses_api import (
    finished,
    function_call_item,
    message_item,
    new_id,
    response_object,
)

# The events that end a Responses stream (relay.py records the call just before one of them).
FINAL_EVENTS = (b"event: response.completed", b"event: response.incomplete",
                b"event: response.failed")  # fmt: skip


class ChunksToResponseEvents:
    def __init__(self, request: dict[str, Any]) -> None:
        self._request = request
        self._id = new_id("resp")
        self._created = int(time.time())
        self._model = str(request.get("model") or "")
        self._seq = 0
        self._started = False
        self._items: list[dict[str, Any]] = []  # output so far, in order
        self._text: dict[str, Any] | None = None  # the open message item
        self._calls: dict[int, dict[str, Any]] = {}  # open function calls by chunk index
        self._finish: str | None = None

    def _event(self, kind: str, **payload: Any) -> bytes:
        data = {"type": kind, "sequence_number": self._seq, **payload}
        self._seq += 1
        return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"

    def _response(
        self, status: str, usage: Usage | None, incomplete: str | None = None
    ) -> dict[str, Any]:
        return response_object(
            self._request, self._id, list(self._items), status=status, model=self._model,
            created_at=self._created, usage=usage, incomplete=incomplete,
        )  # fmt: skip

    def feed(self, chunk: dict[str, Any]) -> bytes:
        out = []
        if not self._started:
            self._started = True
            if isinstance(chunk.get("model"), str):
                self._model = chunk["model"]
            opening = self._response("in_progress", None)
            out += [self._event("response.created", response=opening),
                    self._event("response.in_progress", response=opening)]  # fmt: skip
        for choice in chunk.get("choices") or ():
            if choice.get("index", 0) != 0:
                continue  # a Response has one answer (n is not a Responses parameter)
            delta = choice.get("delta") or {}
            text = delta.get("content")
            if isinstance(text, str) and text:
                out.append(self._text_delta(text))
            for call in delta.get("tool_calls") or ():
                out.append(self._call_delta(call))
            if choice.get("finish_reason"):
                self._finish = choice["finish_reason"]
        return b"".join(out)

    def _text_delta(self, text: str) -> bytes:
        out = b""
        if self._text is None:
            out += self._close_calls()
            item = message_item(new_id("msg"), "", status="in_progress")
            item["content"] = []
            self._text = item
            self._items.append(item)
            index = len(self._items) - 1
            out += self._event("response.output_item.added", output_index=index, item=item)
            part = {"type": "output_text", "text": "", "annotations": []}
            out += self._event("response.content_part.added", item_id=item["id"],
                               output_index=index, content_index=0, part=part)  # fmt: skip
            item["content"] = [part]
        item = self._text
        item["content"][0]["text"] += text
        return out + self._event("response.output_text.delta", item_id=item["id"],
                                 output_index=self._items.index(item), content_index=0,
                                 delta=text, logprobs=[])  # fmt: skip

    def _call_delta(self, call: dict[str, Any]) -> bytes:
        out = b""
        index = call.get("index", 0)
        item = self._calls.get(index)
        function = call.get("function") or {}
        if item is None:
            out += self._close_text()
            call_id = call.get("id") or new_id("call")
            name = function.get("name") or ""
            item = function_call_item(new_id("fc"), call_id, name, "", status="in_progress")
            self._calls[index] = item
            self._items.append(item)
            out += self._event("response.output_item.added",
                               output_index=len(self._items) - 1, item=dict(item))  # fmt: skip
        arguments = function.get("arguments")
        if isinstance(arguments, str) and arguments:
            item["arguments"] += arguments
            out += self._event("response.function_call_arguments.delta", item_id=item["id"],
                               output_index=self._items.index(item), delta=arguments)  # fmt: skip
        return out

    def _close_text(self) -> bytes:
        item, self._text = self._text, None
        if item is None:
            return b""
        index = self._items.index(item)
        part = item["content"][0]
        item["status"] = "completed"
        return (
            self._event("response.output_text.done", item_id=item["id"], output_index=index,
                        content_index=0, text=part["text"], logprobs=[])
            + self._event("response.content_part.done", item_id=item["id"],
                          output_index=index, content_index=0, part=part)
            + self._event("response.output_item.done", output_index=index, item=item)
        )  # fmt: skip

    def _close_calls(self) -> bytes:
        out = b""
        for item in self._calls.values():
            index = self._items.index(item)
            item["status"] = "completed"
            out += self._event("response.function_call_arguments.done", item_id=item["id"],
                               output_index=index, arguments=item["arguments"])  # fmt: skip
            out += self._event("response.output_item.done", output_index=index, item=item)
        self._calls = {}
        return out

    def finish(self, usage: Usage) -> bytes:
        """The closing events, once the chat stream has ended (`[DONE]`)."""
        out = b""
        if not self._started:
            out += self.feed({})
        out += self._close_text() + self._close_calls()
        status, incomplete = finished(self._finish)
        final = self._response(status, usage, incomplete)
        kind = "response.completed" if status == "completed" else "response.incomplete"
        return out + self._event(kind, response=final)
