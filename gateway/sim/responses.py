"""OpenAI-shaped bodies and stream chunks for the simulator's answers."""

from __future__ import annotations

import time
from typing import Any

import orjson

from gateway.sim.engine import Timing
from gateway.sim.generate import Choice


def usage(prompt_tokens: int, completion_tokens: int, cached: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": cached},
    }


def error_body(
    message: str, error_type: str, code: str | int | None = None, param: str | None = None
) -> bytes:
    """OpenAI's error shape."""
    return orjson.dumps(
        {"error": {"message": message, "type": error_type, "param": param, "code": code}}
    )


def chat_body(rid: str, model: str, choices: list[Choice], use: dict[str, Any]) -> bytes:
    out = []
    for i, c in enumerate(choices):
        message: dict[str, Any] = {"role": "assistant", "content": c.text or None}
        if c.tool_calls:
            message = {"role": "assistant", "content": None, "tool_calls": list(c.tool_calls)}
        out.append(
            {
                "index": i,
                "message": message,
                "logprobs": None,
                "finish_reason": c.finish_reason,
                "stop_reason": c.stop,  # as vLLM: the stop string that ended it
            }
        )
    return orjson.dumps(
        {
            "id": rid,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": out,
            "usage": use,
        }
    )


def completion_body(rid: str, model: str, choices: list[Choice], use: dict[str, Any]) -> bytes:
    out = [
        {
            "index": i,
            "text": c.text,
            "logprobs": None,
            "finish_reason": c.finish_reason,
            "stop_reason": c.stop,
        }
        for i, c in enumerate(choices)
    ]
    return orjson.dumps(
        {
            "id": rid,
            "object": "text_completion",
            "created": int(time.time()),
            "model": model,
            "choices": out,
            "usage": use,
        }
    )


class ChunkWriter:
    """SSE events for a stream, in the order OpenAI sends them."""

    def __init__(self, rid: str, model: str, chat: bool, include_usage: bool) -> None:
        self.rid = rid
        self.model = model
        self.chat = chat
        self.include_usage = include_usage
        self.created = int(time.time())
        self._object = "chat.completion.chunk" if chat else "text_completion"

    def _event(self, choices: list[dict[str, Any]], **extra: Any) -> bytes:
        payload: dict[str, Any] = {
            "id": self.rid,
            "object": self._object,
            "created": self.created,
            "model": self.model,
            "choices": choices,
            **extra,
        }
        if self.include_usage and "usage" not in extra:
            payload["usage"] = None
        return b"data: " + orjson.dumps(payload) + b"\n\n"

    def start(self, n: int) -> bytes:
        if not self.chat:
            return b""
        return b"".join(
            self._event(
                [
                    {
                        "index": i,
                        "delta": {"role": "assistant", "content": ""},
                        "logprobs": None,
                        "finish_reason": None,
                    }
                ]
            )
            for i in range(n)
        )

    def piece(self, index: int, text: str) -> bytes:
        if self.chat:
            return self._event(
                [
                    {
                        "index": index,
                        "delta": {"content": text},
                        "logprobs": None,
                        "finish_reason": None,
                    }
                ]
            )
        return self._event(
            [{"index": index, "text": text, "logprobs": None, "finish_reason": None}]
        )

    def tool_call(self, index: int, call: dict[str, Any]) -> bytes:
        delta = {"role": "assistant", "tool_calls": [{"index": 0, **call}]}
        return self._event(
            [{"index": index, "delta": delta, "logprobs": None, "finish_reason": None}]
        )

    def finish(self, index: int, reason: str, stop: str | None = None) -> bytes:
        if self.chat:
            choice = {"index": index, "delta": {}, "logprobs": None, "finish_reason": reason}
        else:
            choice = {"index": index, "text": "", "logprobs": None, "finish_reason": reason}
        choice["stop_reason"] = stop
        return self._event([choice])

    def usage(self, use: dict[str, Any]) -> bytes:
        return self._event([], usage=use) if self.include_usage else b""

    @staticmethod
    def done() -> bytes:
        return b"data: [DONE]\n\n"


def timing_headers(replica: int, tier: str, timing: Timing) -> dict[str, str]:
    return {
        "x-sim-replica": str(replica),
        "x-sim-tier": tier,
        "x-sim-queue-ms": f"{timing.queue_s * 1000:.3f}",
        "x-sim-prefill-ms": f"{timing.prefill_s * 1000:.3f}",
        "x-sim-decode-ms": f"{timing.decode_s * 1000:.3f}",
        "x-sim-cached-tokens": str(timing.cached_tokens),
    }
