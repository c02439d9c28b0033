"""The simulator's Responses API (as vLLM serves one): the request answered by the chat engine,
the answer re-spoken as a Response or as typed events. It lets every native-Responses path of
the gateway be tested here."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
from starlette.responses import Response, StreamingResponse

from gateway.call import Usage
from gateway.dialects.responses_api import Unsupported, chat_to_response, responses_to_chat
from gateway.dialects.responses_stream import ChunksToResponseEvents
from gateway.sim.requests import invalid

JSON = "application/json"


def as_chat(body: dict[str, Any]) -> dict[str, Any]:
    try:
        chat = responses_to_chat(body)
    except Unsupported as exc:
        raise invalid(str(exc)) from exc
    except (KeyError, TypeError, AttributeError) as exc:
        raise invalid(f"invalid request: {type(exc).__name__}: {exc}") from exc
    if isinstance(body.get("cache_salt"), str):  # vLLM takes its KV salt on every endpoint
        chat["cache_salt"] = body["cache_salt"]
    return chat


def as_response(answer: Response, body: dict[str, Any]) -> Response:
    """The chat engine's answer (whole or streamed) as the Responses API's."""
    if answer.status_code >= 400:
        return answer
    if isinstance(answer, StreamingResponse):
        return StreamingResponse(
            _events(answer.body_iterator, body),  # type: ignore[arg-type]
            media_type="text/event-stream",
            headers={k: v for k, v in answer.headers.items() if k.startswith("x-sim-")},
        )
    completion = orjson.loads(answer.body)
    reported = completion.get("usage") or {}
    usage = Usage(
        reported.get("prompt_tokens", 0),
        reported.get("completion_tokens", 0),
        (reported.get("prompt_tokens_details") or {}).get("cached_tokens", 0),
    )
    headers = {k: v for k, v in answer.headers.items() if k.startswith("x-sim-")}
    return Response(orjson.dumps(chat_to_response(completion, body, usage)), media_type=JSON,
                    headers=headers)  # fmt: skip


async def _events(chunks: AsyncIterator[bytes], body: dict[str, Any]) -> AsyncIterator[bytes]:
    events = ChunksToResponseEvents(body)
    usage = Usage()
    pending = b""
    async for raw in chunks:
        pending += raw if isinstance(raw, bytes) else raw.encode()
        *whole, pending = pending.split(b"\n\n")
        out = []
        for event in whole:
            data = event.removeprefix(b"data: ").strip()
            if not data:
                continue
            if data == b"[DONE]":
                out.append(events.finish(usage))
                continue
            chunk = orjson.loads(data)
            reported = chunk.get("usage")
            if isinstance(reported, dict):
                details = reported.get("prompt_tokens_details") or {}
                usage = Usage(reported.get("prompt_tokens", 0),
                              reported.get("completion_tokens", 0),
                              details.get("cached_tokens", 0))  # fmt: skip
            out.append(events.feed(chunk))
        if out:
            yield b"".join(out)
