"""The batched tier in-process, through the official OpenAI SDK (files and batches) and plain
HTTP in Anthropic's shapes (message batches): the job's lifecycle, its files, validation that
fails the whole file, per-line errors, budgets reserved at submit and settled per line,
cancelling, expiry, spare capacity only, and a job taken over from a gateway that stopped."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import openai
import pytest
from sqlalchemy import update

from gateway.stores.sql import batches as batches_table
from gateway.stores.sql import make_engine
from tests.support.asgi import InProcess, in_process

KEY, ADMIN = "tg-batch-key-0123456789", "tg-batch-admin-0123456789"
OTHER = "tg-batch-other-0123456789"
CONFIG = """
version: 1
server: {reload_poll_seconds: 0}
auth:
  keys: [{name: tester, key_env: TG_KEY, team: qa}, {name: other, key_env: TG_OTHER, team: web}]
backends:
  gpu:
    type: sim
    time_scale: TIME_SCALE
    models:
      - {name: m, input_price_per_mtok: 1.0, output_price_per_mtok: 2.0, slots: 64,
         decode_ms_per_token: 20}
      - {name: e, kind: embedding, input_price_per_mtok: 0.1}
models:
  chat: {backend: gpu, model: m}
  emb: {backend: gpu, model: e}
limits:
  prompt_margin: 0
  prompt_overhead_tokens: 0
  budgets:
    - {name: qa-day, scope: team, subject: qa, usd: "BUDGET", window: total}
batch: {poll_seconds: 0.05, spare_below: SPARE, concurrency: 2, lease_seconds: 2,
        flex_max_wait_seconds: FLEX}
policies:
  - use: rules
    with:
      rules:
        - name: low-priority-waits
          match: {headers: {x-priority: low}}
          actions: {defer: {max_wait_seconds: 30}}
"""


async def _gateway(
    tmp: Path, time_scale: float = 0, budget: str = "1", spare: int = 4, flex: float = 30
) -> AsyncIterator[InProcess]:
    text = (CONFIG.replace("TIME_SCALE", str(time_scale)).replace("BUDGET", budget)
            .replace("SPARE", str(spare)).replace("FLEX", str(flex)))  # fmt: skip
    config = tmp / "tollgate.yaml"
    config.write_text(text)
    async with in_process(
        config, tmp, {"TG_KEY": KEY, "TG_OTHER": OTHER, "TOLLGATE_ADMIN_KEY": ADMIN}
    ) as gw:
        yield gw


@pytest.fixture
async def gw(tmp_path: Path) -> AsyncIterator[InProcess]:
    async for gateway in _gateway(tmp_path):
        yield gateway


def sdk(gw: InProcess) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=gw.base_url, api_key=KEY, http_client=gw.client,
                              max_retries=0)  # fmt: skip


def chat_line(i: int, model: str = "chat", max_tokens: int = 5, **extra: Any) -> dict[str, Any]:
    return {"custom_id": f"req-{i}", "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": model, "messages": [{"role": "user", "content": f"question {i}"}],
                     "max_tokens": max_tokens}, **extra}  # fmt: skip


def jsonl(lines: list[dict[str, Any]]) -> bytes:
    return b"\n".join(json.dumps(line).encode() for line in lines) + b"\n"


async def submit(gw: InProcess, lines: list[dict[str, Any]], **kw: Any) -> Any:
    client = sdk(gw)
    uploaded = await client.files.create(file=("input.jsonl", jsonl(lines)), purpose="batch")
    return await client.batches.create(input_file_id=uploaded.id,
                                       endpoint=kw.pop("endpoint", "/v1/chat/completions"),
                                       completion_window=kw.pop("window", "24h"), **kw)  # fmt: skip


async def ended(gw: InProcess, ident: str, seconds: float = 20) -> Any:
    client = sdk(gw)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while True:
        job = await client.batches.retrieve(ident)
        if job.status in ("completed", "failed", "expired", "cancelled"):
            return job
        assert loop.time() < deadline, job
        await asyncio.sleep(0.05)


async def usage(gw: InProcess) -> tuple[Decimal, Decimal]:
    """The budget's counter and the team's recorded spend, once settlements are in."""
    headers = {"authorization": f"Bearer {ADMIN}"}
    budget = (await gw.client.get("/admin/budgets/qa-day?for=qa", headers=headers)).json()
    spend = (await gw.client.get("/admin/spend?group_by=team&window=total", headers=headers)).json()
    return Decimal(budget["usage"]["usd"]), Decimal(spend["total"]["usd"])


async def test_the_sdk_flow_with_output_and_error_files(gw: InProcess) -> None:
    lines = [chat_line(i) for i in range(5)] + [chat_line(5, model="nope")]
    job = await submit(gw, lines, metadata={"purpose": "nightly"})
    assert job.status == "in_progress" and job.request_counts.total == 6  # type: ignore[union-attr]
    assert job.metadata == {"purpose": "nightly"}
    done = await ended(gw, job.id)
    assert done.status == "completed"
    assert (done.request_counts.completed, done.request_counts.failed) == (5, 1)  # type: ignore[union-attr]
    client = sdk(gw)
    output = [
        json.loads(x) for x in (await client.files.content(done.output_file_id)).text.splitlines()
    ]  # type: ignore[arg-type]
    assert [o["custom_id"] for o in output] == [f"req-{i}" for i in range(5)]  # input order
    first = output[0]["response"]
    assert first["status_code"] == 200 and first["body"]["object"] == "chat.completion"
    assert first["request_id"] == f"{job.id}-0"
    errors = [
        json.loads(x) for x in (await client.files.content(done.error_file_id)).text.splitlines()
    ]  # type: ignore[arg-type]
    assert [e["custom_id"] for e in errors] == ["req-5"]
    assert errors[0]["response"]["status_code"] == 404
    assert errors[0]["response"]["body"]["error"]["code"] == "model_not_found"
    listed = await client.batches.list()
    assert [b.id for b in listed.data] == [job.id]
    assert (await client.files.retrieve(done.output_file_id)).purpose == "batch_output"  # type: ignore[arg-type]
    # Money: every line settled at what it cost; nothing of the reservation is left.
    counter, spent = await usage(gw)
    assert spent > 0 and counter == spent


async def test_embeddings_lines_run_too(gw: InProcess) -> None:
    line = {"custom_id": "e1", "method": "POST", "url": "/v1/embeddings",
            "body": {"model": "emb", "input": "hello"}}  # fmt: skip
    done = await ended(gw, (await submit(gw, [line], endpoint="/v1/embeddings")).id)
    assert done.request_counts.completed == 1  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("bad", "code"),
    [
        ({"custom_id": "x", "method": "POST", "url": "/v1/embeddings", "body": {"model": "emb"}},
         "mismatched_endpoint"),
        (chat_line(0), "duplicate_custom_id"),
        ({"custom_id": "y", "method": "GET", "url": "/v1/chat/completions", "body": {}},
         "invalid_method"),
        ({"custom_id": "z", "url": "/v1/chat/completions", "body": {"model": "chat"}},
         "missing_required_parameter"),
    ],
)  # fmt: skip
async def test_a_bad_file_fails_whole_at_validation(
    gw: InProcess, bad: dict[str, Any], code: str
) -> None:
    job = await submit(gw, [chat_line(0), bad])
    assert job.status == "failed" and job.errors is not None
    problems = job.errors.data  # type: ignore[union-attr]
    assert [(p.code, p.line) for p in problems] == [(code, 2)]
    counter, _ = await usage(gw)
    assert counter == 0, "a failed file reserves nothing"


async def test_invalid_json_lines_and_bad_requests_get_openai_errors(gw: InProcess) -> None:
    client = sdk(gw)
    uploaded = await client.files.create(file=("x.jsonl", b'{"custom_id": 1\nnot json\n'),
                                         purpose="batch")  # fmt: skip
    job = await client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions",
                                      completion_window="24h")  # fmt: skip
    assert [p.code for p in job.errors.data] == ["invalid_json_line"] * 2  # type: ignore[union-attr]
    with pytest.raises(openai.NotFoundError):
        await client.batches.create(input_file_id="file-missing", endpoint="/v1/chat/completions",
                                    completion_window="24h")  # fmt: skip
    with pytest.raises(openai.BadRequestError) as info:
        await client.batches.create(input_file_id=uploaded.id, endpoint="/v1/audio",  # type: ignore[arg-type]
                                    completion_window="24h")  # fmt: skip
    assert info.value.body["param"] == "endpoint"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as info:
        await client.batches.create(
            input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="forever"
        )  # type: ignore[arg-type]
    assert info.value.body["param"] == "completion_window"  # type: ignore[index]
    r = await gw.client.post("/v1/files", headers={"authorization": f"Bearer {KEY}"},
                             files={"file": ("a.jsonl", b"{}")},
                             data={"purpose": "fine-tune"})  # fmt: skip
    assert r.status_code == 400 and r.json()["error"]["param"] == "purpose"
    with pytest.raises(openai.NotFoundError):
        await client.files.retrieve("file-nope")


async def test_a_batch_that_cannot_fit_its_budget_is_refused_up_front(tmp_path: Path) -> None:
    async for gw in _gateway(tmp_path, budget="0.0001"):
        lines = [chat_line(i, max_tokens=200) for i in range(300)]  # worst case ~$0.12
        with pytest.raises(openai.RateLimitError) as info:
            await submit(gw, lines)
        assert "qa-day" in info.value.message and "batch cannot fit" in info.value.message
        assert info.value.body["type"] == "insufficient_quota"  # type: ignore[index]
        assert (await sdk(gw).batches.list()).data == []


async def test_cancel_releases_what_never_ran(tmp_path: Path) -> None:
    # ~0.8 s a line, two at a time: the job owner notices the cancel (within a second) long
    # before the ~5 s the twelve lines would take.
    async for gw in _gateway(tmp_path, time_scale=1):
        job = await submit(gw, [chat_line(i, max_tokens=40) for i in range(12)])
        client = sdk(gw)
        await _until(client, job.id, 1)
        cancelling = await client.batches.cancel(job.id)
        assert cancelling.status in ("cancelling", "cancelled")
        done = await ended(gw, job.id)
        assert done.status == "cancelled" and done.cancelled_at is not None
        completed = done.request_counts.completed  # type: ignore[union-attr]
        assert 1 <= completed < 12
        errors = (await client.files.content(done.error_file_id)).text.splitlines()  # type: ignore[arg-type]
        assert len(errors) == 12 - completed
        assert all(json.loads(e)["error"]["code"] == "batch_cancelled" for e in errors)
        counter, spent = await usage(gw)
        assert counter == spent > 0, "the unrun lines' worst case went back"


async def _completed(client: openai.AsyncOpenAI, ident: str) -> int:
    return (await client.batches.retrieve(ident)).request_counts.completed  # type: ignore[union-attr]


async def _until(client: openai.AsyncOpenAI, ident: str, at_least: int) -> None:
    """Polls until that many lines completed (the runner works in another task)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20
    while (await _completed(client, ident)) < at_least:
        assert loop.time() < deadline
        await asyncio.sleep(0.02)


async def test_a_finished_job_cannot_be_cancelled(gw: InProcess) -> None:
    done = await ended(gw, (await submit(gw, [chat_line(0)])).id)
    with pytest.raises(openai.ConflictError):
        await sdk(gw).batches.cancel(done.id)


async def _in_flight(gw: InProcess) -> int:
    r = await gw.client.get("/admin/replicas", headers={"authorization": f"Bearer {ADMIN}"})
    tiers = r.json()["replicas"]["chat"]
    return sum(rep["in_flight"] for reps in tiers.values() for rep in reps)


async def _live_call(gw: InProcess) -> asyncio.Task[Any]:
    """A slow live call, in flight until it is awaited."""
    call = asyncio.create_task(sdk(gw).chat.completions.create(
        model="chat", messages=[{"role": "user", "content": "long"}], max_tokens=400))  # fmt: skip
    while await _in_flight(gw) < 1:  # noqa: ASYNC110 (state in another task's hands)
        await asyncio.sleep(0.01)
    return call


async def test_lines_wait_for_spare_capacity_and_run_when_it_frees(tmp_path: Path) -> None:
    """With room for one call per replica, a live call in flight keeps every line waiting;
    once it is answered, the job runs."""
    async for gw in _gateway(tmp_path, time_scale=0.3, spare=1):
        live = await _live_call(gw)
        job = await submit(gw, [chat_line(i) for i in range(3)])
        for _ in range(8):
            assert not live.done(), "the live call was meant to outlast this check"
            seen = await sdk(gw).batches.retrieve(job.id)
            assert seen.request_counts.completed == 0, "a line ran beside a live call"  # type: ignore[union-attr]
            await asyncio.sleep(0.05)
        await live
        done = await ended(gw, job.id)
        assert done.request_counts.completed == 3  # type: ignore[union-attr]


async def test_an_expired_job_ends_its_unrun_lines(tmp_path: Path) -> None:
    async for gw in _gateway(tmp_path, time_scale=0.3, spare=1):
        live = await _live_call(gw)
        job = await submit(gw, [chat_line(i) for i in range(3)], window="1h")
        engine = make_engine(f"sqlite:///{tmp_path}/tollgate.db")
        with engine.begin() as conn:  # its window ends now
            conn.execute(update(batches_table).where(batches_table.c.id == job.id)
                         .values(expires_at=0.0))  # fmt: skip
        engine.dispose()
        done = await ended(gw, job.id)
        assert done.status == "expired" and done.request_counts.failed == 3  # type: ignore[union-attr]
        errors = (await sdk(gw).files.content(done.error_file_id)).text.splitlines()  # type: ignore[arg-type]
        assert {json.loads(e)["error"]["code"] for e in errors} == {"batch_expired"}
        await live
        counter, spent = await usage(gw)
        assert counter == spent


async def test_anthropic_message_batches(gw: InProcess) -> None:
    headers = {"x-api-key": KEY, "anthropic-version": "2023-06-01"}

    def request(name: str, model: str) -> dict[str, Any]:
        params = {"model": model, "max_tokens": 4, "messages": [{"role": "user", "content": "x"}]}
        return {"custom_id": name, "params": params}

    requests = [request(f"m{i}", "chat") for i in range(3)] + [request("bad", "nope")]
    made = await gw.client.post(
        "/v1/messages/batches", headers=headers, json={"requests": requests}
    )
    assert made.status_code == 200, made.text
    body = made.json()
    assert body["type"] == "message_batch" and body["id"].startswith("msgbatch_")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20
    while body["processing_status"] != "ended":
        assert loop.time() < deadline
        await asyncio.sleep(0.05)
        body = (await gw.client.get(f"/v1/messages/batches/{body['id']}", headers=headers)).json()
    assert body["request_counts"] == {"processing": 0, "succeeded": 3, "errored": 1,
                                      "canceled": 0, "expired": 0}  # fmt: skip
    results = await gw.client.get(f"/v1/messages/batches/{body['id']}/results", headers=headers)
    rows = [json.loads(x) for x in results.text.splitlines()]
    assert [r["custom_id"] for r in rows] == ["m0", "m1", "m2", "bad"]
    assert rows[0]["result"]["type"] == "succeeded"
    assert rows[0]["result"]["message"]["type"] == "message"
    assert rows[3]["result"]["type"] == "errored"
    assert rows[3]["result"]["error"]["error"]["type"] == "not_found_error"
    dup = await gw.client.post("/v1/messages/batches", headers=headers,
                               json={"requests": [requests[0], requests[0]]})  # fmt: skip
    assert dup.status_code == 400 and dup.json()["type"] == "error"
    assert "duplicate" in dup.json()["error"]["message"]


async def test_another_keys_jobs_and_files_do_not_exist(gw: InProcess) -> None:
    job = await submit(gw, [chat_line(0)])
    other = {"authorization": f"Bearer {OTHER}"}
    assert (await gw.client.get(f"/v1/batches/{job.id}", headers=other)).status_code == 404
    assert (await gw.client.post(f"/v1/batches/{job.id}/cancel", headers=other)).status_code == 404
    r = await gw.client.get(f"/v1/files/{job.input_file_id}/content", headers=other)
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    assert (await gw.client.get("/v1/batches", headers=other)).json()["data"] == []
    r = await gw.client.get(f"/v1/batches/{job.id}", headers={"authorization": "Bearer nope"})
    assert r.status_code == 401


async def test_a_job_whose_owner_stopped_is_taken_over_and_no_line_runs_twice(
    gw: InProcess, tmp_path: Path
) -> None:
    """Another gateway owned the job and stopped mid-way: one line done, two in flight. Once
    its lease ends, this gateway resumes: the finished line stands, the two it had in flight
    run again (they never finished), the rest run once; each line has one result."""
    from sqlalchemy import select

    from gateway.stores import batches as store
    from gateway.stores.sql import batch_lines

    engine = make_engine(f"sqlite:///{tmp_path}/tollgate.db")
    job = store.BatchRow(
        id="batch_takeover", key_id=_key_id(gw), principal={"key_id": _key_id(gw),
        "name": "tester", "team": "qa"}, dialect="openai", endpoint="chat.completions",
        input_file_id=None, status="validating", created_at=0.0, expires_at=4e9, times={},
        metadata=None, errors=None, total=5, reservation=[],
    )  # fmt: skip
    lines = [store.LineRow(i, f"req-{i}", chat_line(i)["body"], 0, 0) for i in range(5)]
    store.create_batch(engine, job, lines)
    done_result = {"status_code": 200, "request_id": "earlier", "body": {"earlier": True},
                   "error": None}  # fmt: skip
    with engine.begin() as conn:  # the dead owner's state, in one step
        conn.execute(update(batches_table).where(batches_table.c.id == job.id)
                     .values(status="in_progress", owner="gw-dead", lease_until=4e9))  # fmt: skip
        conn.execute(update(batch_lines).where(batch_lines.c.line == 0)
                     .values(status="succeeded", result=json.dumps(done_result)))  # fmt: skip
        conn.execute(update(batch_lines).where(batch_lines.c.line.in_([1, 2]))
                     .values(status="running", owner="gw-dead"))  # fmt: skip
    await asyncio.sleep(0.3)
    assert (await sdk(gw).batches.retrieve(job.id)).request_counts.completed == 1, "not yet"  # type: ignore[union-attr]
    with engine.begin() as conn:  # its lease runs out
        conn.execute(update(batches_table).where(batches_table.c.id == job.id)
                     .values(lease_until=0.0))  # fmt: skip
    finished = await ended(gw, job.id)
    assert finished.request_counts.completed == 5  # type: ignore[union-attr]
    output = (await sdk(gw).files.content(finished.output_file_id)).text.splitlines()  # type: ignore[arg-type]
    rows = [json.loads(x) for x in output]
    assert [r["custom_id"] for r in rows] == [f"req-{i}" for i in range(5)]
    assert rows[0]["response"]["body"] == {"earlier": True}, "a finished line is not run again"
    with engine.connect() as conn:
        owners = conn.execute(select(batch_lines.c.status)).scalars().all()
    engine.dispose()
    assert owners == ["succeeded"] * 5
    headers = {"authorization": f"Bearer {ADMIN}"}
    spend = (await gw.client.get("/admin/spend?group_by=team&window=total", headers=headers)).json()
    assert spend["total"]["requests"] == 4, "lines 1-4 ran here, once each"


def _key_id(gw: InProcess) -> str:
    from gateway.auth import key_digest

    return key_digest(KEY)[:16]


async def test_batches_can_be_switched_off(tmp_path: Path) -> None:
    config = tmp_path / "tollgate.yaml"
    text = (CONFIG.replace("TIME_SCALE", "0").replace("BUDGET", "1").replace("SPARE", "2")
            .replace("FLEX", "1"))  # fmt: skip
    config.write_text(text.replace("batch: {", "batch: {enabled: false, "))
    async with in_process(config, tmp_path, {"TG_KEY": KEY, "TG_OTHER": OTHER}) as gw:
        r = await gw.client.get("/v1/batches", headers={"authorization": f"Bearer {KEY}"})
        assert r.status_code == 404 and "batch.enabled" in r.json()["error"]["message"]


async def test_an_upload_without_a_file_is_a_400(gw: InProcess) -> None:
    r = await gw.client.post("/v1/files", headers={"authorization": f"Bearer {KEY}"},
                             data={"purpose": "batch"})  # fmt: skip
    assert r.status_code == 400 and r.json()["error"]["param"] == "file"


async def _flex_call(gw: InProcess, **kw: Any) -> float:
    """A short call that can wait; when it was answered (loop time)."""
    await sdk(gw).chat.completions.create(
        model="chat", messages=[{"role": "user", "content": "whenever"}], max_tokens=3, **kw
    )
    return asyncio.get_running_loop().time()


@pytest.mark.parametrize(
    "how", [{"service_tier": "flex"}, {"extra_headers": {"x-priority": "low"}}]
)
async def test_a_call_that_can_wait_waits_for_spare_capacity(
    tmp_path: Path, how: dict[str, Any]
) -> None:
    """`service_tier: flex`, or a rule's `defer`: the call waits while the alias's only room is
    taken by a live call, and is answered once that one is."""
    async for gw in _gateway(tmp_path, time_scale=0.3, spare=1):
        live = await _live_call(gw)  # ~2.4 s
        flex = asyncio.create_task(_flex_call(gw, **how))
        for _ in range(10):  # half a second of the live call: the flex call waits through it
            await asyncio.sleep(0.05)
            assert not flex.done(), "the flex call went ahead of the live call"
        assert not live.done(), "the live call was meant to outlast this check"
        assert (await live).choices
        assert await flex > 0, "answered once the live call was"


async def test_a_flex_call_waits_no_longer_than_its_bound(tmp_path: Path) -> None:
    async for gw in _gateway(tmp_path, time_scale=0.3, spare=1, flex=0.2):
        live = await _live_call(gw)
        answered = await _flex_call(gw, service_tier="flex")
        assert not live.done(), "served at its bound, while the live call still ran"
        assert answered > 0
        await live
