"""The simulator's OpenAI-compatible HTTP surface, standalone (`tollgate sim`) or in-process."""

from __future__ import annotations

import asyncio
import itertools
import random
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from gateway.accounting.tokens import TokenCounter, content_text
from gateway.sim.config import SimConfig, SimModel
from gateway.sim.engine import Replica, Timing
from gateway.sim.metrics import render
from gateway.sim.responses import (
    Choice,
    ChunkWriter,
    chat_body,
    completion_body,
    error_body,
    timing_headers,
    tool_call_for,
    usage,
)
from gateway.sim.text import apply_stop, embedding, pack_base64, seed_of, words


class StreamDropped(Exception):
    """Raised mid-stream by fault injection: the connection is cut without a clean end."""


class SimError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        error_type: str,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.error_type, self.code = status, message, error_type, code
        self.headers = headers or {}


class SimServer:
    """Holds the replicas of every configured model and answers requests against them."""

    def __init__(self, config: SimConfig, tokens: TokenCounter) -> None:
        self.config = config
        self.tokens = tokens
        self.models: dict[str, SimModel] = {m.name: m for m in config.models}
        self.replicas: dict[str, list[Replica]] = {
            m.name: [Replica(m, i, config.time_scale) for i in range(m.replicas)]
            for m in config.models
        }
        self._tiebreak = itertools.count()
        self._faults = random.Random(config.seed)
        self.app = Starlette(
            routes=[
                Route("/v1/chat/completions", self._chat, methods=["POST"]),
                Route("/v1/completions", self._completions, methods=["POST"]),
                Route("/v1/embeddings", self._embeddings, methods=["POST"]),
                Route("/v1/models", self._models, methods=["GET"]),
                Route("/health", self._health, methods=["GET"]),
                Route("/metrics", self._metrics, methods=["GET"]),
            ]
        )

    def all_replicas(self) -> list[Replica]:
        return [r for group in self.replicas.values() for r in group]

    # -- endpoints -------------------------------------------------------------------------

    async def _chat(self, request: Request) -> Response:
        return await self._guarded(request, self._generate, True)

    async def _completions(self, request: Request) -> Response:
        return await self._guarded(request, self._generate, False)

    async def _embeddings(self, request: Request) -> Response:
        return await self._guarded(request, self._embed, False)

    async def _models(self, request: Request) -> Response:
        data = [
            {
                "id": m.name,
                "object": "model",
                "created": 0,
                "owned_by": "tollgate-sim",
                "tier": m.tier,
                "kind": m.kind,
                "replicas": m.replicas,
                "input_price_per_mtok": m.input_price_per_mtok,
                "output_price_per_mtok": m.output_price_per_mtok,
            }
            for m in self.models.values()
        ]
        return Response(
            orjson.dumps({"object": "list", "data": data}), media_type="application/json"
        )

    async def _health(self, request: Request) -> Response:
        return Response(b"", status_code=200)

    async def _metrics(self, request: Request) -> Response:
        return Response(
            render(self.all_replicas()), media_type="text/plain; version=0.0.4; charset=utf-8"
        )

    # -- plumbing --------------------------------------------------------------------------

    async def _guarded(self, request: Request, handler: Any, chat: bool) -> Response:
        try:
            try:
                body = orjson.loads(await request.body())
            except orjson.JSONDecodeError as exc:
                raise SimError(400, f"invalid JSON body: {exc}", "invalid_request_error") from exc
            if not isinstance(body, dict):
                raise SimError(400, "body must be a JSON object", "invalid_request_error")
            model = self._model(body)
            await self._inject_faults()
            replica = self._replica(model, request.headers.get("x-sim-replica"))
            response: Response = await handler(body, model, replica, chat)
            return response
        except SimError as exc:
            return Response(
                error_body(exc.message, exc.error_type, exc.code),
                exc.status,
                headers=exc.headers,
                media_type="application/json",
            )

    def _model(self, body: dict[str, Any]) -> SimModel:
        name = body.get("model")
        model = self.models.get(name) if isinstance(name, str) else None
        if model is None:
            raise SimError(
                404, f"The model `{name}` does not exist.", "NotFoundError", "model_not_found"
            )
        return model

    async def _inject_faults(self) -> None:
        faults = self.config.faults
        if faults.added_latency_ms:
            await asyncio.sleep(faults.added_latency_ms / 1000)
        if faults.error_rate and self._faults.random() < faults.error_rate:
            status = self._faults.choice(faults.error_statuses)
            kind = "rate_limit_error" if status == 429 else "server_error"
            headers = {"retry-after": "1"} if status == 429 else {}
            raise SimError(status, f"injected fault: HTTP {status}", kind, headers=headers)

    def _replica(self, model: SimModel, pinned: str | None) -> Replica:
        group = self.replicas[model.name]
        if pinned is not None:
            if not pinned.isdigit() or int(pinned) >= len(group):
                raise SimError(
                    400, f"no replica {pinned} (0..{len(group) - 1})", "invalid_request_error"
                )
            return group[int(pinned)]
        least = min(r.load for r in group)
        idle = [r for r in group if r.load == least]
        return idle[next(self._tiebreak) % len(idle)]

    # -- generation ------------------------------------------------------------------------

    async def _generate(
        self, body: dict[str, Any], model: SimModel, replica: Replica, chat: bool
    ) -> Response:
        if model.kind != "chat":
            raise SimError(400, f"{model.name} is an embedding model", "invalid_request_error")
        prompt = _chat_prompt(body) if chat else _completion_prompt(body)
        ids = self.tokens.encode(prompt)
        choices = self._plan(body, model, prompt)
        salt = body.get("cache_salt") if isinstance(body.get("cache_salt"), str) else None
        rid = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex
        stream_options = body.get("stream_options")
        include_usage = isinstance(stream_options, dict) and bool(
            stream_options.get("include_usage")
        )
        if body.get("stream") is True:
            writer = ChunkWriter(rid, model.name, chat, include_usage)
            headers = {"x-sim-replica": str(replica.index), "x-sim-tier": model.tier}
            return StreamingResponse(
                self._stream(writer, replica, ids, salt, choices),
                media_type="text/event-stream",
                headers=headers,
            )
        longest = max(len(c.pieces) for c in choices)
        timing = Timing()
        async for _ in replica.generate(ids, salt, longest, max(longest, 1), timing):
            pass
        for c in choices:
            replica.finish(c.finish_reason)
        use = usage(len(ids), self._completion_tokens(choices), timing.cached_tokens)
        make = chat_body if chat else completion_body
        return Response(
            make(rid, model.name, choices, use),
            media_type="application/json",
            headers=timing_headers(replica.index, model.tier, timing),
        )

    async def _stream(
        self,
        writer: ChunkWriter,
        replica: Replica,
        ids: Sequence[int],
        salt: str | None,
        choices: list[Choice],
    ) -> AsyncIterator[bytes]:
        longest = max(len(c.pieces) for c in choices)
        drop_at = -1
        if self.config.faults.drop_rate and self._faults.random() < self.config.faults.drop_rate:
            drop_at = longest // 2
        sent = 0
        timing = Timing()
        generation = replica.generate(ids, salt, longest, 1, timing)
        try:
            async for done in generation:
                if done == 0:
                    yield writer.start(len(choices)) + self._tool_calls(writer, choices)
                    continue
                if sent >= drop_at >= 0:
                    raise StreamDropped(f"injected fault: stream dropped after {sent} tokens")
                out = [
                    writer.piece(i, c.pieces[t])
                    for t in range(sent, done)
                    for i, c in enumerate(choices)
                    if t < len(c.pieces)
                ]
                sent = done
                yield b"".join(out)
        finally:
            await generation.aclose()
        tail = [writer.finish(i, c.finish_reason) for i, c in enumerate(choices)]
        for c in choices:
            replica.finish(c.finish_reason)
        use = usage(len(ids), self._completion_tokens(choices), timing.cached_tokens)
        yield b"".join(tail) + writer.usage(use) + writer.done()

    @staticmethod
    def _tool_calls(writer: ChunkWriter, choices: list[Choice]) -> bytes:
        return b"".join(
            writer.tool_call(i, c.tool_call)
            for i, c in enumerate(choices)
            if c.tool_call is not None
        )

    def _plan(self, body: dict[str, Any], model: SimModel, prompt: str) -> list[Choice]:
        max_tokens = body.get("max_tokens") or body.get("max_completion_tokens")
        natural = not isinstance(max_tokens, int) or max_tokens < 1
        count = model.default_max_tokens if natural else int(max_tokens or 0)
        stop = body.get("stop")
        stops = [stop] if isinstance(stop, str) else [s for s in stop or () if isinstance(s, str)]
        requested_n = body.get("n")
        n = requested_n if isinstance(requested_n, int) and requested_n > 0 else 1
        choices = []
        for index in range(n):
            seed = seed_of(self.config.seed, body.get("seed"), prompt, index)
            call = tool_call_for(body.get("tools"), body.get("tool_choice"), seed)
            if call is not None:
                choices.append(Choice((), "tool_calls", call))
                continue
            pieces, stopped = apply_stop(words(seed, count), stops)
            reason = "stop" if stopped or natural else "length"
            choices.append(Choice(tuple(pieces), reason))
        return choices

    def _completion_tokens(self, choices: list[Choice]) -> int:
        total = 0
        for c in choices:
            total += (
                len(c.pieces)
                if not c.tool_call
                else self.tokens.count(c.tool_call["function"]["arguments"])
            )
        return total

    # -- embeddings ------------------------------------------------------------------------

    async def _embed(
        self, body: dict[str, Any], model: SimModel, replica: Replica, chat: bool
    ) -> Response:
        if model.kind != "embedding":
            raise SimError(400, f"{model.name} is not an embedding model", "invalid_request_error")
        texts = _embedding_inputs(body.get("input"))
        dims = body.get("dimensions")
        dimensions = dims if isinstance(dims, int) and 0 < dims <= 8192 else model.dimensions
        ids = [self.tokens.encode(t) for t in texts]
        flat = [i for group in ids for i in group]
        async for _ in replica.generate(flat, None, 0, 1, Timing()):
            pass
        replica.finish("stop")
        as_b64 = body.get("encoding_format") == "base64"
        data = []
        for index, text in enumerate(texts):
            vector = embedding(text, dimensions, self.config.seed)
            data.append(
                {
                    "object": "embedding",
                    "index": index,
                    "embedding": pack_base64(vector) if as_b64 else vector,
                }
            )
        payload = {
            "object": "list",
            "data": data,
            "model": model.name,
            "usage": {"prompt_tokens": len(flat), "total_tokens": len(flat)},
        }
        return Response(orjson.dumps(payload), media_type="application/json")


def _chat_prompt(body: dict[str, Any]) -> str:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise SimError(400, "messages must be a non-empty list", "invalid_request_error")
    return (
        "".join(
            f"<|{m.get('role', '')}|>{content_text(m.get('content'))}\n"
            for m in messages
            if isinstance(m, dict)
        )
        + "<|assistant|>"
    )


def _completion_prompt(body: dict[str, Any]) -> str:
    prompt = body.get("prompt")
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list) and all(isinstance(p, str) for p in prompt):
        return "".join(prompt)
    raise SimError(400, "prompt must be a string or a list of strings", "invalid_request_error")


def _embedding_inputs(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value:
        if all(isinstance(v, str) for v in value):
            return list(value)
        if all(isinstance(v, int) for v in value):
            return [" ".join(map(str, value))]
        if all(isinstance(v, list) for v in value):
            return [" ".join(map(str, v)) for v in value]
    raise SimError(
        400, "input must be a string, a list of strings or token arrays", "invalid_request_error"
    )
