"""Sends a call to a backend of either dialect: natively when they match, translated when not.

An Anthropic-dialect call to an OpenAI-compatible backend (a local vLLM tier, the simulator)
goes out as a chat completion and comes back as a Message; an OpenAI chat call to an Anthropic
backend the other way round; streams are translated event by event as they arrive. A Responses
API call goes to a backend that speaks it as it is, and to any other as a chat completion (then,
for an Anthropic backend, as a Message), its answer re-spoken as a Response.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import replace
from typing import Any, Protocol

import orjson

from gateway.accounting.tokens import TokenCounter, anthropic_prompt_tokens
from gateway.backends.base import Backend, UpstreamRequest, UpstreamResponse, UpstreamStream
from gateway.backends.sse import EventSplitter, event_data
from gateway.call import ResponseMeta, Usage
from gateway.dialects.requests import chat_to_messages, messages_to_chat
from gateway.dialects.responses import chat_completion_to_message, message_to_chat_completion
from gateway.dialects.responses_api import Unsupported, chat_to_response, responses_to_chat
from gateway.dialects.responses_stream import ChunksToResponseEvents
from gateway.dialects.streams import ChunksToEvents, EventsToChunks
from gateway.errors import InvalidRequest, UpstreamBadResponse

JSON = (("content-type", "application/json"),)
_OPENAI_DONE = b"data: [DONE]\n\n"
DEFAULT_ANTHROPIC_MAX_TOKENS = 4096


def dialect_of(backend: Backend) -> str:
    return backend.capabilities.dialect


async def send(
    backend: Backend, request: UpstreamRequest, tokens: TokenCounter
) -> UpstreamResponse:
    if request.endpoint == "responses":
        return await _responses(backend, request, tokens)
    native = dialect_of(backend)
    if request.dialect == native:
        return await backend.send(request)
    if request.dialect == "anthropic":
        return await _anthropic_via_openai(backend, request, tokens)
    if request.endpoint != "chat.completions":
        raise InvalidRequest(
            f"The model '{request.model}' is served by an Anthropic backend, which offers chat "
            f"completions only, not {request.endpoint}.",
            param="model",
        )
    return await _openai_via_anthropic(backend, request)


async def _anthropic_via_openai(
    backend: Backend, request: UpstreamRequest, tokens: TokenCounter
) -> UpstreamResponse:
    translated = _translated(messages_to_chat, dict(request.body))
    if "cache_salt" in request.body:  # the tenant's KV salt (executor.py) is no dialect's field
        translated["cache_salt"] = request.body["cache_salt"]
    upstream = replace(
        request,
        endpoint="chat.completions",
        body=translated,
        dialect="openai",
        client_wants_usage=True,
        headers=_trace_headers(request),
    )
    response = await backend.send(upstream)
    stops = _stop_sequences(request.body)
    if response.stream is not None:
        prompt = anthropic_prompt_tokens(request.body, tokens)
        stream = Translated(response.stream, _ChunksIn(ChunksToEvents(prompt, stops)))
        return replace(response, headers=_stream_headers(response), stream=stream)
    if response.status >= 400:
        return response  # the pipeline says it again in the client's own words
    payload = _json(response.body, "choices")
    usage = response.usage or Usage()
    body = orjson.dumps(chat_completion_to_message(payload, usage, stops))
    return replace(response, body=body, headers=JSON)


def _stop_sequences(body: Mapping[str, Any]) -> tuple[str, ...]:
    stops = body.get("stop_sequences")
    return tuple(s for s in stops if isinstance(s, str)) if isinstance(stops, list) else ()


async def _openai_via_anthropic(backend: Backend, request: UpstreamRequest) -> UpstreamResponse:
    upstream = replace(
        request,
        endpoint="messages",
        body=_translated(chat_to_messages, dict(request.body), DEFAULT_ANTHROPIC_MAX_TOKENS),
        dialect="anthropic",
        headers=_trace_headers(request),
    )
    response = await backend.send(upstream)
    if response.stream is not None:
        stream = Translated(response.stream, _EventsIn(EventsToChunks(request.client_wants_usage)))
        return replace(response, headers=_stream_headers(response), stream=stream)
    if response.status >= 400:
        return response
    usage = response.usage or Usage()
    body = orjson.dumps(message_to_chat_completion(_json(response.body, "content"), usage))
    return replace(response, body=body, headers=JSON)


async def _responses(
    backend: Backend, request: UpstreamRequest, tokens: TokenCounter
) -> UpstreamResponse:
    if backend.capabilities.responses:
        return await _native_responses(backend, request)
    try:
        chat = _translated(responses_to_chat, dict(request.body))
    except InvalidRequest as exc:
        if isinstance(exc.__cause__, Unsupported):
            raise InvalidRequest(
                f"{exc.__cause__} (the model's backend {backend.name} serves chat completions); "
                "route this model to a backend with the Responses API",
                param="tools",
            ) from exc
        raise
    if "cache_salt" in request.body:  # the tenant's KV salt (executor.py) goes along
        chat["cache_salt"] = request.body["cache_salt"]
    upstream = replace(request, endpoint="chat.completions", body=chat, client_wants_usage=True)
    response = await send(backend, upstream, tokens)
    if response.stream is not None:
        events = ChunksToResponseEvents(dict(request.body))
        stream = Translated(response.stream, _ResponsesOut(events))
        return replace(response, headers=_stream_headers(response), stream=stream)
    if response.status >= 400:
        return response
    usage = response.usage or Usage()
    answer = chat_to_response(_json(response.body, "choices"), dict(request.body), usage)
    return replace(response, body=orjson.dumps(answer), headers=JSON)


async def _native_responses(backend: Backend, request: UpstreamRequest) -> UpstreamResponse:
    """As it is, but for the conversation: Tollgate keeps it and sends it whole (the upstream
    never saw Tollgate's response ids), and echoes the client's `previous_response_id`."""
    body = dict(request.body)
    previous = body.pop("previous_response_id", None)
    response = await backend.send(replace(request, body=body))
    if previous is None or response.stream is not None or response.status >= 400:
        return response
    answer = _json(response.body, "output")
    answer["previous_response_id"] = previous
    return replace(response, body=orjson.dumps(answer))


def _translated(translate: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
    """A request said in the other dialect. The edge checks the fields translation reads; a
    shape it did not foresee is still the request's fault (a 400), never a 500."""
    try:
        return translate(*args)
    except (AttributeError, TypeError, ValueError, KeyError) as exc:
        raise InvalidRequest(
            f"The request could not be translated for this model's backend: a field has an "
            f"unexpected shape ({type(exc).__name__}: {exc})."
        ) from exc


def _trace_headers(request: UpstreamRequest) -> dict[str, str]:
    """Only the trace context crosses a dialect translation (not the client's vendor headers)."""
    return {k: v for k, v in request.headers.items() if k in ("traceparent", "tracestate")}


def _json(body: bytes, required: str) -> dict[str, Any]:
    """The upstream's answer to translate; anything but the object its API promises (with a
    list under `required`) is the upstream failing, never an empty answer invented here."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        parsed = None
    if not isinstance(parsed, dict) or not isinstance(parsed.get(required), list):
        raise UpstreamBadResponse(
            "The upstream returned an invalid response.", detail=f"body: {body[:200]!r}"
        )
    return parsed


def _stream_headers(response: UpstreamResponse) -> tuple[tuple[str, str], ...]:
    return (("content-type", "text/event-stream"),)


class _Translator(Protocol):
    def feed(self, payload: dict[str, Any]) -> bytes: ...

    def end(self, usage: Usage) -> bytes: ...


class _ChunksIn:
    """OpenAI chunks -> Anthropic events; the closing events come at `[DONE]`."""

    def __init__(self, inner: ChunksToEvents) -> None:
        self._inner = inner

    def feed(self, payload: dict[str, Any]) -> bytes:
        return self._inner.feed(payload)

    def end(self, usage: Usage) -> bytes:
        return self._inner.finish(usage)


class _ResponsesOut:
    """OpenAI chunks -> Responses events; `response.completed` comes at `[DONE]`."""

    def __init__(self, inner: ChunksToResponseEvents) -> None:
        self._inner = inner

    def feed(self, payload: dict[str, Any]) -> bytes:
        return self._inner.feed(payload)

    def end(self, usage: Usage) -> bytes:
        return self._inner.finish(usage)


class _EventsIn:
    def __init__(self, inner: EventsToChunks) -> None:
        self._inner = inner

    def feed(self, payload: dict[str, Any]) -> bytes:
        return self._inner.feed(payload)

    def end(self, usage: Usage) -> bytes:
        return b""  # message_stop already produced the closing chunk and [DONE]


class Translated:
    """An upstream stream re-spoken in the client's dialect, event by event."""

    def __init__(self, inner: UpstreamStream, translator: _Translator) -> None:
        self._inner = inner
        self._translator = translator

    async def __aiter__(self) -> AsyncIterator[bytes]:
        """Raises UpstreamBadResponse for what is not the upstream dialect's stream (an event
        that is not a JSON object, or that the translator cannot read) and for a stream that
        ends before its terminator: never an invented ending."""
        splitter = EventSplitter()
        done = False
        async for block in self._inner:
            out = []
            for event in splitter.feed(block):
                data = event_data(event)
                if not data:
                    continue
                if data == b"[DONE]":
                    done = True
                    out.append(self._translator.end(self._inner.usage()))
                    continue
                out.append(self._feed(data))
            chunk = b"".join(out)
            done = done or chunk.endswith(_OPENAI_DONE)
            if chunk:
                yield chunk
        if not done:
            raise UpstreamBadResponse(
                "The upstream's stream ended before it was complete.",
                detail="translated stream ended without its final event",
            )

    def _feed(self, data: bytes) -> bytes:
        try:
            payload = orjson.loads(data)
            if not isinstance(payload, dict):
                raise TypeError("not an object")
            return self._translator.feed(payload)
        except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError, KeyError) as exc:
            raise UpstreamBadResponse(
                "The upstream returned an invalid stream.",
                detail=f"stream event {data[:120]!r}: {type(exc).__name__}",
            ) from exc

    def usage(self) -> Usage:
        return self._inner.usage()

    def meta(self) -> ResponseMeta | None:
        return self._inner.meta()

    async def aclose(self) -> None:
        await self._inner.aclose()
