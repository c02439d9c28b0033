"""The simulator's HTTP surface, standalone (`tollgate sim`) or in-process: OpenAI-compatible
chat completions, completions and embeddings, and Anthropic Messages, over simulated replicas.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from gateway.accounting.tokens import TokenCounter
from gateway.sim import messages
from gateway.sim.batch_api import SimBatches
from gateway.sim.config import SimConfig, SimModel
from gateway.sim.engine import Replica, Timing
from gateway.sim.generate import Planned, plan
from gateway.sim.metrics import render
from gateway.sim.requests import SimError, invalid, openai_chat, openai_completion
from gateway.sim.responses import (
    ChunkWriter,
    chat_body,
    completion_body,
    error_body,
    timing_headers,
    usage,
)
from gateway.sim.responses_api import as_chat, as_response
from gateway.sim.text import embedding, lexical_embedding, pack_base64

Handler = Callable[[dict[str, Any], SimModel, Replica], Awaitable[Response]]
JSON = "application/json"


class StreamDropped(Exception):
    """Raised mid-stream by fault injection: the connection is cut without a clean end."""


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
        # The faults in force: the config's, until a test (or an operator rehearsing an
        # outage) sets others on the running server.
        self.faults = config.faults
        self.batches = SimBatches(config.batch, config.time_scale, self.answer_line, config.seed)
        self.app = Starlette(
            routes=[
                Route("/v1/chat/completions", self._chat, methods=["POST"]),
                Route("/v1/completions", self._completions, methods=["POST"]),
                Route("/v1/embeddings", self._embeddings, methods=["POST"]),
                Route("/v1/messages", self._messages, methods=["POST"]),
                Route("/v1/messages/count_tokens", self._count_tokens, methods=["POST"]),
                Route("/v1/responses", self._responses, methods=["POST"]),
                *self.batches.routes(),
                Route("/v1/models", self._models, methods=["GET"]),
                Route("/health", self._health, methods=["GET"]),
                Route("/sim/restart", self._restart, methods=["POST"]),
                Route("/metrics", self._metrics, methods=["GET"]),
            ]
        )

    def all_replicas(self) -> list[Replica]:
        return [r for group in self.replicas.values() for r in group]

    # -- endpoints -------------------------------------------------------------------------

    async def _chat(self, request: Request) -> Response:
        return await self._guarded(request, self._openai_chat)

    async def _completions(self, request: Request) -> Response:
        return await self._guarded(request, self._openai_completion)

    async def _embeddings(self, request: Request) -> Response:
        return await self._guarded(request, self._embed)

    async def _responses(self, request: Request) -> Response:
        async def answer(body: dict[str, Any], model: SimModel, replica: Replica) -> Response:
            chat = {**as_chat(body), "model": model.name}
            return as_response(await self._openai_chat(chat, model, replica), body)

        return await self._guarded(request, answer)

    async def answer_line(self, url: str, body: dict[str, Any]) -> tuple[int, bytes]:
        """One batch line, answered as the live endpoint would answer it."""
        handler = {"/v1/chat/completions": self._openai_chat, "/v1/embeddings": self._embed,
                   "/v1/completions": self._openai_completion}[url]  # fmt: skip
        try:
            model = self._model(body)
            answer = await handler({**body, "stream": False}, model, self._replica(model, None))
        except SimError as exc:
            return exc.status, error_body(exc.message, exc.error_type, exc.code, exc.param)
        return answer.status_code, bytes(answer.body)

    async def _messages(self, request: Request) -> Response:
        return await self._guarded(request, self._anthropic, anthropic=True)

    async def _count_tokens(self, request: Request) -> Response:
        async def count(body: dict[str, Any], model: SimModel, replica: Replica) -> Response:
            ask = messages.parse({**body, "max_tokens": 1})
            prompt = model.template_tokens + self.tokens.count(ask.prompts[0])
            return Response(orjson.dumps({"input_tokens": prompt}), media_type=JSON)

        return await self._guarded(request, count, anthropic=True, faults=False)

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
                "batch_discount": self.config.batch.discount,
            }
            for m in self.models.values()
        ]
        return Response(orjson.dumps({"object": "list", "data": data}), media_type=JSON)

    async def _health(self, request: Request) -> Response:
        return Response(b"", status_code=200)

    async def _restart(self, request: Request) -> Response:
        """What an engine restart does to its KV cache: every replica's is emptied."""
        self.restart()
        return Response(b"", status_code=204)

    def restart(self) -> None:
        for replica in self.all_replicas():
            replica.restart()

    async def _metrics(self, request: Request) -> Response:
        return Response(
            render(self.all_replicas()), media_type="text/plain; version=0.0.4; charset=utf-8"
        )

    # -- plumbing --------------------------------------------------------------------------

    async def _guarded(
        self, request: Request, handler: Handler, anthropic: bool = False, faults: bool = True
    ) -> Response:
        try:
            try:
                body = orjson.loads(await request.body())
            except orjson.JSONDecodeError as exc:
                raise invalid(f"invalid JSON body: {exc}") from exc
            if not isinstance(body, dict):
                raise invalid("body must be a JSON object")
            model = self._model(body)
            if faults:
                await self._inject_faults()
            replica = self._replica(model, request.headers.get("x-sim-replica"))
            return await handler(body, model, replica)
        except SimError as exc:
            payload = (
                messages.error_body(exc)
                if anthropic
                else error_body(exc.message, exc.error_type, exc.code, exc.param)
            )
            return Response(payload, exc.status, headers=exc.headers, media_type=JSON)

    def _model(self, body: dict[str, Any]) -> SimModel:
        name = body.get("model")
        model = self.models.get(name) if isinstance(name, str) else None
        if model is None:
            raise SimError(
                404, f"The model `{name}` does not exist.", "NotFoundError", "model_not_found"
            )
        return model

    async def _inject_faults(self) -> None:
        faults = self.faults
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
                raise invalid(f"no replica {pinned} (0..{len(group) - 1})")
            return group[int(pinned)]
        least = min(r.load for r in group)
        idle = [r for r in group if r.load == least]
        return idle[next(self._tiebreak) % len(idle)]

    def _drop_at(self, longest: int) -> int:
        drop = self.faults.drop_rate
        return longest // 2 if drop and self._faults.random() < drop else -1

    # -- OpenAI generation -----------------------------------------------------------------

    async def _openai_chat(self, body: dict[str, Any], model: SimModel, r: Replica) -> Response:
        planned = plan(openai_chat(body), model, self.tokens, self.config.seed, chat=True)
        return await self._openai(body, model, r, planned, chat=True)

    async def _openai_completion(
        self, body: dict[str, Any], model: SimModel, r: Replica
    ) -> Response:
        planned = plan(openai_completion(body), model, self.tokens, self.config.seed, chat=False)
        return await self._openai(body, model, r, planned, chat=False)

    async def _openai(
        self, body: dict[str, Any], model: SimModel, replica: Replica, planned: Planned, chat: bool
    ) -> Response:
        salt = body.get("cache_salt") if isinstance(body.get("cache_salt"), str) else None
        rid = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex
        if body.get("stream") is True:
            options = body.get("stream_options")
            wants_usage = isinstance(options, dict) and bool(options.get("include_usage"))
            writer = ChunkWriter(rid, model.name, chat, wants_usage)
            headers = {"x-sim-replica": str(replica.index), "x-sim-tier": model.tier}
            return StreamingResponse(
                self._openai_stream(writer, replica, salt, planned),
                media_type="text/event-stream",
                headers=headers,
            )
        timing = Timing()
        async for _ in replica.generate(
            planned.prompt_ids, salt, planned.longest, max(planned.longest, 1), timing
        ):
            pass
        for c in planned.choices:
            replica.finish(c.finish_reason)
        use = usage(planned.prompt_tokens, planned.completion_tokens, timing.cached_tokens)
        make = chat_body if chat else completion_body
        return Response(
            make(rid, model.name, planned.choices, use),
            media_type=JSON,
            headers=timing_headers(replica.index, model.tier, timing),
        )

    async def _openai_stream(
        self, writer: ChunkWriter, replica: Replica, salt: str | None, planned: Planned
    ) -> AsyncIterator[bytes]:
        choices = planned.choices
        drop_at = self._drop_at(planned.longest)
        sent = 0
        timing = Timing()
        generation = replica.generate(planned.prompt_ids, salt, planned.longest, 1, timing)
        try:
            async for done in generation:
                if done == 0:
                    calls = [
                        writer.tool_call(i, call)
                        for i, c in enumerate(choices)
                        for call in c.tool_calls
                    ]
                    yield writer.start(len(choices)) + b"".join(calls)
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
        tail = [writer.finish(i, c.finish_reason, c.stop) for i, c in enumerate(choices)]
        for c in choices:
            replica.finish(c.finish_reason)
        use = usage(planned.prompt_tokens, planned.completion_tokens, timing.cached_tokens)
        yield b"".join(tail) + writer.usage(use) + writer.done()

    # -- Anthropic Messages ----------------------------------------------------------------

    async def _anthropic(self, body: dict[str, Any], model: SimModel, replica: Replica) -> Response:
        planned = plan(messages.parse(body), model, self.tokens, self.config.seed, chat=True)
        (choice,) = planned.choices
        if body.get("stream") is True:
            return StreamingResponse(
                self._anthropic_stream(model, replica, planned),
                media_type="text/event-stream",
                headers={"x-sim-replica": str(replica.index), "x-sim-tier": model.tier},
            )
        timing = Timing()
        async for _ in replica.generate(planned.prompt_ids, None, planned.longest, 1, timing):
            pass
        replica.finish(choice.finish_reason)
        use = messages.usage(planned.prompt_tokens, choice.tokens, timing.cached_tokens)
        return Response(
            orjson.dumps(messages.message(model.name, choice, use)),
            media_type=JSON,
            headers=timing_headers(replica.index, model.tier, timing),
        )

    async def _anthropic_stream(
        self, model: SimModel, replica: Replica, planned: Planned
    ) -> AsyncIterator[bytes]:
        (choice,) = planned.choices
        drop_at = self._drop_at(planned.longest)
        timing = Timing()
        generation = replica.generate(planned.prompt_ids, None, planned.longest, 1, timing)
        writer: messages.EventWriter | None = None
        sent = 0
        try:
            async for done in generation:
                if done == 0:
                    writer = messages.EventWriter(
                        model.name, choice, planned.prompt_tokens, timing.cached_tokens
                    )
                    yield writer.start()
                    continue
                if sent >= drop_at >= 0:
                    raise StreamDropped(f"injected fault: stream dropped after {sent} tokens")
                assert writer is not None
                yield b"".join(writer.piece(p) for p in choice.pieces[sent:done])
                sent = done
        finally:
            await generation.aclose()
        replica.finish(choice.finish_reason)
        assert writer is not None
        yield writer.end(choice.tokens)

    # -- embeddings ------------------------------------------------------------------------

    async def _embed(self, body: dict[str, Any], model: SimModel, replica: Replica) -> Response:
        if model.kind != "embedding":
            raise invalid(f"{model.name} is not an embedding model")
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
            make = lexical_embedding if model.embedding == "lexical" else embedding
            vector = make(text, dimensions, self.config.seed)
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
        return Response(orjson.dumps(payload), media_type=JSON)


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
    raise invalid("input must be a string, a list of strings or token arrays")
