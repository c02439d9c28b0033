"""The simulator's OpenAI Batch API, through the official SDK as a vendor's would be used:
upload, create, poll, download; a share of lines failing on purpose; cancelling during the
completion delay; the batch discount listed with the models."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from gateway.accounting.tokens import TokenCounter
from gateway.sim.config import SimConfig
from gateway.sim.server import SimServer
from tests.support.servers import ThreadServer


def sim(**batch: Any) -> SimConfig:
    models = [{"name": "m", "decode_ms_per_token": 0, "prefill_ms_per_token": 0},
              {"name": "e", "kind": "embedding"}]  # fmt: skip
    return SimConfig.model_validate_json(
        json.dumps({"time_scale": 1, "batch": batch, "models": models})
    )


@pytest.fixture
def served(request: pytest.FixtureRequest) -> Iterator[openai.OpenAI]:
    server = SimServer(sim(**request.param), TokenCounter())
    with ThreadServer(server.app) as http:
        client = openai.OpenAI(base_url=http.url + "/v1", api_key="sim", max_retries=0)
        yield client
        client.close()


def lines(n: int) -> bytes:
    def row(name: str, model: str) -> dict[str, Any]:
        body = {"model": model, "max_tokens": 3, "messages": [{"role": "user", "content": "hi"}]}
        return {"custom_id": name, "method": "POST", "url": "/v1/chat/completions", "body": body}

    rows = [row(f"r{i}", "m") for i in range(n)] + [row("unknown", "nope")]
    return b"\n".join(json.dumps(r).encode() for r in rows)


def ended(client: openai.OpenAI, ident: str) -> Any:
    deadline = time.monotonic() + 20
    while (job := client.batches.retrieve(ident)).status not in ("completed", "cancelled"):
        assert time.monotonic() < deadline, job
        time.sleep(0.02)
    return job


@pytest.mark.parametrize("served", [{"completion_delay_seconds": 0.1}], indirect=True)
def test_a_batch_runs_after_its_delay_and_writes_its_files(served: openai.OpenAI) -> None:
    uploaded = served.files.create(file=("in.jsonl", lines(4)), purpose="batch")
    job = served.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions",
                                completion_window="24h")  # fmt: skip
    assert job.status == "in_progress"
    done = ended(served, job.id)
    assert (done.request_counts.completed, done.request_counts.failed) == (4, 1)  # type: ignore[union-attr]
    output = [json.loads(x) for x in served.files.content(done.output_file_id).text.splitlines()]  # type: ignore[arg-type]
    assert [o["custom_id"] for o in output] == ["r0", "r1", "r2", "r3"]
    assert output[0]["response"]["body"]["usage"]["completion_tokens"] == 3
    errors = served.files.content(done.error_file_id).text.splitlines()  # type: ignore[arg-type]
    assert json.loads(errors[0])["response"]["status_code"] == 404


@pytest.mark.parametrize("served", [{"completion_delay_seconds": 0, "failure_rate": 1.0}],
                         indirect=True)  # fmt: skip
def test_a_failure_rate_fails_lines_on_purpose(served: openai.OpenAI) -> None:
    uploaded = served.files.create(file=("in.jsonl", lines(3)), purpose="batch")
    job = served.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions",
                                completion_window="24h")  # fmt: skip
    done = ended(served, job.id)
    assert done.request_counts.failed == 4 and done.output_file_id is None  # type: ignore[union-attr]


@pytest.mark.parametrize("served", [{"completion_delay_seconds": 5, "discount": 0.25}],
                         indirect=True)  # fmt: skip
def test_cancel_during_the_delay_and_the_discount_is_listed(served: openai.OpenAI) -> None:
    uploaded = served.files.create(file=("in.jsonl", lines(2)), purpose="batch")
    job = served.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions",
                                completion_window="24h")  # fmt: skip
    assert served.batches.cancel(job.id).status == "cancelling"
    with pytest.raises(openai.BadRequestError):
        served.batches.create(input_file_id=uploaded.id, endpoint="/v1/audio",  # type: ignore[arg-type]
                              completion_window="24h")  # fmt: skip
    with pytest.raises(openai.NotFoundError):
        served.batches.retrieve("batch_nope")
    models = httpx.get(str(served.base_url) + "models").json()["data"]
    assert {m["batch_discount"] for m in models} == {0.25}
