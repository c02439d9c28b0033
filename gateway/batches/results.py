"""What a job looks like to each vendor's SDK: OpenAI's batch and file objects, its output and
error files (one JSON line per request, in input order); Anthropic's message batch and its
results."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Any

import orjson

from gateway.batches.lines import URLS
from gateway.stores.batches import BatchRow, FileRow, LineRow


def file_object(row: FileRow) -> dict[str, Any]:
    return {"id": row.id, "object": "file", "bytes": row.size, "created_at": int(row.created_at),
            "filename": row.filename, "purpose": row.purpose, "status": "processed",
            "status_details": None, "expires_at": None}  # fmt: skip


def _when(times: dict[str, float], status: str) -> int | None:
    at = times.get(status)
    return int(at) if at is not None else None


def openai_batch(job: BatchRow) -> dict[str, Any]:
    counts = job.counts
    done = counts.get("succeeded", 0)
    failed = counts.get("errored", 0) + counts.get("expired", 0)
    t = job.times
    return {
        "id": job.id, "object": "batch", "endpoint": _url(job.endpoint),
        "errors": {"object": "list", "data": job.errors} if job.errors else None,
        "input_file_id": job.input_file_id,
        "completion_window": f"{round((job.expires_at - job.created_at) / 3600)}h",
        "status": job.status, "output_file_id": job.output_file_id,
        "error_file_id": job.error_file_id, "created_at": int(job.created_at),
        "in_progress_at": _when(t, "in_progress"), "expires_at": int(job.expires_at),
        "finalizing_at": _when(t, "completed"), "completed_at": _when(t, "completed"),
        "failed_at": _when(t, "failed"), "expired_at": _when(t, "expired"),
        "cancelling_at": _when(t, "cancelling"), "cancelled_at": _when(t, "cancelled"),
        "request_counts": {"total": job.total, "completed": done, "failed": failed},
        "metadata": job.metadata,
    }  # fmt: skip


def _url(endpoint: str) -> str:
    return next((u for u, e in URLS.items() if e == endpoint), "/v1/messages")


def finalized(
    job: BatchRow, lines: list[LineRow], now: float
) -> tuple[FileRow | None, FileRow | None]:
    """An OpenAI job's output and error files (None where no line goes in one); Anthropic jobs
    serve their results from the lines themselves."""
    if job.dialect != "openai":
        return None, None
    output, errors = [], []
    for line in lines:
        ident = "batch_req_" + secrets.token_hex(12)
        result = line.result
        if line.status == "succeeded" and result is not None:
            output.append({"id": ident, "custom_id": line.custom_id,
                           "response": _response(result), "error": None})  # fmt: skip
        elif line.status == "errored" and result is not None:
            errors.append({"id": ident, "custom_id": line.custom_id,
                           "response": _response(result), "error": None})  # fmt: skip
        elif line.status in ("cancelled", "expired"):
            code = f"batch_{line.status}"
            message = ("This request was not run: the batch was cancelled."
                       if line.status == "cancelled"
                       else "This request could not be executed before the completion window "
                       "expired.")  # fmt: skip
            errors.append({"id": ident, "custom_id": line.custom_id, "response": None,
                           "error": {"code": code, "message": message}})  # fmt: skip
    return _file(job, "output", output, now), _file(job, "error", errors, now)


def _response(result: dict[str, Any]) -> dict[str, Any]:
    body = result.get("body")
    if body is None and result.get("error") is not None:
        error = result["error"]
        body = {"error": {"message": error.get("message"), "type": error.get("type"),
                          "param": None, "code": error.get("code")}}  # fmt: skip
    return {"status_code": result["status_code"], "request_id": result["request_id"],
            "body": body}  # fmt: skip


def _file(job: BatchRow, kind: str, rows: list[dict[str, Any]], now: float) -> FileRow | None:
    if not rows:
        return None
    content = b"".join(orjson.dumps(r) + b"\n" for r in rows)
    return FileRow("file-" + secrets.token_hex(12), job.key_id, "batch_output",
                   f"{job.id}_{kind}.jsonl", len(content), now, content)  # fmt: skip


# -- Anthropic --------------------------------------------------------------------------


def _rfc3339(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def anthropic_batch(job: BatchRow, base_url: str) -> dict[str, Any]:
    counts = job.counts
    ended = job.status in ("completed", "cancelled", "expired", "failed")
    status = "ended" if ended else "canceling" if job.status == "cancelling" else "in_progress"
    t = job.times
    return {
        "id": job.id, "type": "message_batch", "processing_status": status,
        "request_counts": {
            "processing": counts.get("pending", 0) + counts.get("running", 0),
            "succeeded": counts.get("succeeded", 0), "errored": counts.get("errored", 0),
            "canceled": counts.get("cancelled", 0), "expired": counts.get("expired", 0),
        },
        "ended_at": _rfc3339(next((t[s] for s in ("completed", "cancelled", "expired")
                                   if s in t), None)),
        "created_at": _rfc3339(job.created_at), "expires_at": _rfc3339(job.expires_at),
        "archived_at": None, "cancel_initiated_at": _rfc3339(t.get("cancelling")),
        "results_url": f"{base_url}/v1/messages/batches/{job.id}/results" if ended else None,
    }  # fmt: skip


def anthropic_results(lines: list[LineRow]) -> bytes:
    out = []
    for line in lines:
        result = line.result or {}
        if line.status == "succeeded":
            entry: dict[str, Any] = {"type": "succeeded", "message": result.get("body")}
        elif line.status == "errored":
            body = result.get("body")
            error = body.get("error") if isinstance(body, dict) else None
            if error is None:
                raw = result.get("error") or {}
                error = {"type": raw.get("type") or "api_error", "message": raw.get("message")}
            entry = {"type": "errored", "error": {"type": "error", "error": error}}
        elif line.status in ("cancelled", "expired"):
            entry = {"type": "canceled" if line.status == "cancelled" else "expired"}
        else:
            continue
        out.append(orjson.dumps({"custom_id": line.custom_id, "result": entry}) + b"\n")
    return b"".join(out)
