"""One structured log line per finished call: no key secrets, no prompt text."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from gateway.call import CallRecord

log = logging.getLogger("gateway.access")


class LogSink:
    name = "log"

    async def write(self, records: Sequence[CallRecord]) -> None:
        if not log.isEnabledFor(logging.INFO):
            return
        for r in records:
            usage = r.usage
            log.info(
                "%s %s %s -> %s",
                r.endpoint,
                r.model,
                r.backend or "-",
                r.status,
                extra={
                    "request_id": r.request_id,
                    "key": r.principal.name,
                    "team": r.principal.team,
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
                },
            )

    async def aclose(self) -> None:
        return None
