"""The simulator's OpenAI Batch API (files and batches, as the official SDK uses them), so a
gateway's forwarding to a vendor's batch API is testable here: a job waits its completion
delay, then each line is answered by the simulator's own engine (a configurable share failing),
and its output and error files are written in OpenAI's shapes. State lives in memory."""

from __future__ import annotations

import asyncio
import random
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.sim.config import SimBatch

Answer = Callable[[str, dict[str, Any]], Awaitable[tuple[int, bytes]]]
URLS = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings")
JSON = "application/json"


def _error(status: int, message: str, param: str | None = None) -> Response:
    body = {"error": {"message": message, "type": "invalid_request_error", "param": param,
                      "code": None}}  # fmt: skip
    return Response(orjson.dumps(body), status, media_type=JSON)


class SimBatches:
    def __init__(self, settings: SimBatch, time_scale: float, answer: Answer, seed: int) -> None:
        self._settings = settings
        self._scale = time_scale
        self._answer = answer
        self._rng = random.Random(seed)
        self.files: dict[str, dict[str, Any]] = {}
        self._content: dict[str, bytes] = {}
        self.batches: dict[str, dict[str, Any]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def routes(self) -> list[Route]:
        return [
            Route("/v1/files", self._upload, methods=["POST"]),
            Route("/v1/files/{file_id}", self._file, methods=["GET"]),
            Route("/v1/files/{file_id}/content", self._file_content, methods=["GET"]),
            Route("/v1/batches", self._create, methods=["POST"]),
            Route("/v1/batches/{batch_id}", self._get, methods=["GET"]),
            Route("/v1/batches/{batch_id}/cancel", self._cancel, methods=["POST"]),
        ]

    def _add_file(self, content: bytes, filename: str, purpose: str) -> dict[str, Any]:
        ident = "file-" + secrets.token_hex(12)
        self.files[ident] = {"id": ident, "object": "file", "bytes": len(content),
                             "created_at": int(time.time()), "filename": filename,
                             "purpose": purpose, "status": "processed"}  # fmt: skip
        self._content[ident] = content
        return self.files[ident]

    async def _upload(self, request: Request) -> Response:
        async with request.form() as form:
            upload, purpose = form.get("file"), form.get("purpose")
            if not isinstance(upload, UploadFile) or not isinstance(purpose, str):
                return _error(400, "file and purpose are required", "file")
            content = await upload.read()
        made = self._add_file(content, upload.filename or "upload.jsonl", purpose)
        return Response(orjson.dumps(made), media_type=JSON)

    async def _file(self, request: Request) -> Response:
        found = self.files.get(request.path_params["file_id"])
        if found is None:
            return _error(404, "No such File object", "id")
        return Response(orjson.dumps(found), media_type=JSON)

    async def _file_content(self, request: Request) -> Response:
        content = self._content.get(request.path_params["file_id"])
        if content is None:
            return _error(404, "No such File object", "id")
        return Response(content, media_type="application/jsonl")

    async def _create(self, request: Request) -> Response:
        body = orjson.loads(await request.body())
        if body.get("endpoint") not in URLS:
            return _error(400, f"endpoint must be one of {', '.join(URLS)}", "endpoint")
        source = body.get("input_file_id")
        if source not in self._content:
            return _error(404, f"No such File object: {source}", "input_file_id")
        now = int(time.time())
        ident = "batch_" + secrets.token_hex(12)
        job = {"id": ident, "object": "batch", "endpoint": body["endpoint"], "errors": None,
               "input_file_id": source, "completion_window": body.get("completion_window", "24h"),
               "status": "in_progress", "output_file_id": None, "error_file_id": None,
               "created_at": now, "in_progress_at": now, "expires_at": now + 86_400,
               "finalizing_at": None, "completed_at": None, "failed_at": None,
               "expired_at": None, "cancelling_at": None, "cancelled_at": None,
               "request_counts": {"total": 0, "completed": 0, "failed": 0},
               "metadata": body.get("metadata")}  # fmt: skip
        self.batches[ident] = job
        task = asyncio.get_running_loop().create_task(self._run(job))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return Response(orjson.dumps(job), media_type=JSON)

    async def _get(self, request: Request) -> Response:
        job = self.batches.get(request.path_params["batch_id"])
        if job is None:
            return _error(404, "No such batch", "batch_id")
        return Response(orjson.dumps(job), media_type=JSON)

    async def _cancel(self, request: Request) -> Response:
        job = self.batches.get(request.path_params["batch_id"])
        if job is None:
            return _error(404, "No such batch", "batch_id")
        if job["status"] == "in_progress":
            job["status"], job["cancelling_at"] = "cancelling", int(time.time())
        return Response(orjson.dumps(job), media_type=JSON)

    async def _run(self, job: dict[str, Any]) -> None:
        lines = [orjson.loads(x) for x in self._content[job["input_file_id"]].splitlines()
                 if x.strip()]  # fmt: skip
        job["request_counts"]["total"] = len(lines)
        await asyncio.sleep(self._settings.completion_delay_seconds * self._scale)
        output: list[dict[str, Any]] = []
        errors: list[dict[str, Any]] = []
        for line in lines:
            if job["status"] == "cancelling":
                break
            ident = "batch_req_" + secrets.token_hex(12)
            if self._rng.random() < self._settings.failure_rate:
                status, body = 500, orjson.dumps({"error": {"message": "injected failure",
                                                            "type": "server_error"}})  # fmt: skip
            else:
                status, body = await self._answer(line["url"], line["body"])
            entry = {"id": ident, "custom_id": line["custom_id"],
                     "response": {"status_code": status, "request_id": ident,
                                  "body": orjson.loads(body)}, "error": None}  # fmt: skip
            (output if status < 400 else errors).append(entry)
            job["request_counts"]["completed" if status < 400 else "failed"] += 1
        now = int(time.time())
        for kind, rows in (("output", output), ("error", errors)):
            if rows:
                content = b"".join(orjson.dumps(r) + b"\n" for r in rows)
                made = self._add_file(content, f"{job['id']}_{kind}.jsonl", "batch_output")
                job[f"{kind}_file_id"] = made["id"]
        final = "cancelled" if job["status"] == "cancelling" else "completed"
        job["status"], job["finalizing_at"], job[f"{final}_at"] = final, now, now
