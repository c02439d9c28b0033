"""One access-log line per finished call: no key secrets, no prompt text.

Lines are formatted here and written once per batch. Going through `logging` per call (record
object, filters, formatter, a flush each) cost up to ~0.18 ms CPU per request, a quarter of
the gateway's whole budget (docs/benchmarks.md "Where the time goes").
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from typing import Any, TextIO

import orjson

from gateway.call import CallRecord


class LogSink:
    name = "log"

    def __init__(self, *, json_lines: bool, stream: TextIO | None = None) -> None:
        self._json = json_lines
        self._stream = stream

    async def write(self, records: Sequence[CallRecord]) -> None:
        format_line = self._json_line if self._json else self._text_line
        stream = self._stream or sys.stderr
        stream.write("".join([format_line(r) for r in records]))
        stream.flush()

    @staticmethod
    def fields(r: CallRecord) -> dict[str, Any]:
        usage = r.usage
        return {
            "request_id": r.request_id,
            "key": r.principal.name,
            "team": r.principal.team,
            "endpoint": r.endpoint,
            "model": r.model,
            "backend": r.backend,
            "upstream_model": r.upstream_model,
            "tier": r.tier,
            "status": r.status,
            "error_type": r.error_type,
            "stream": r.stream,
            "disconnected": r.disconnected,
            "input_tokens": usage.input_tokens if usage else None,
            "output_tokens": usage.output_tokens if usage else None,
            "cached_tokens": usage.cached_tokens if usage else None,
            "usage_estimated": usage.estimated if usage else None,
            "latency_ms": round(r.latency_ms, 2),
            "ttft_ms": round(r.ttft_ms, 2) if r.ttft_ms is not None else None,
            "decisions": [f"{d.plugin}:{d.action}" for d in r.decisions],
        }

    def _json_line(self, r: CallRecord) -> str:
        entry = {
            "ts": _timestamp(r.completed_at),
            "level": "info",
            "logger": "gateway.access",
            "msg": f"{r.endpoint} {r.model} {r.backend or '-'} -> {r.status}",
            **self.fields(r),
        }
        return orjson.dumps(entry).decode() + "\n"

    @staticmethod
    def _text_line(r: CallRecord) -> str:
        usage = r.usage
        tokens = f"{usage.input_tokens}/{usage.output_tokens}" if usage else "-/-"
        return (
            f"{_timestamp(r.completed_at)} INFO    gateway.access [{r.request_id}] "
            f"{r.endpoint} {r.model} {r.backend or '-'} -> {r.status} key={r.principal.name} "
            f"tokens={tokens} latency_ms={r.latency_ms:.1f}\n"
        )

    async def aclose(self) -> None:
        return None


def _timestamp(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch)) + f".{int(epoch % 1 * 1000):03d}Z"
