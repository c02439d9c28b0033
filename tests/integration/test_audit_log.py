"""The audit log end to end in-process: every outcome type of the real pipeline becomes exactly
one event in SQL (SQLite and PostgreSQL), and `verify` names any row altered, deleted or
inserted behind its back."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import Engine, delete, insert, select, text, update

from gateway.accounting.tokens import TokenCounter
from gateway.audit import tables
from gateway.audit.prune import PruneRefused, prune
from gateway.audit.verify import verify
from gateway.call import Call, Principal
from gateway.errors import (
    AuthenticationFailed,
    ModelNotFound,
    PolicyDenied,
    UpstreamUnavailable,
)
from gateway.pipeline import Pipeline
from gateway.runtime import Runtime
from tests.support.audit import (
    AuditedPipeline,
    audit_engine,
    bodies,
    decisions,
    events,
    signer,
    with_cache,
)
from tests.support.runtime import make_deps, runtime_from

CONFIG = """
version: 1
auth: {mode: open}
backends:
  sim:
    type: sim
    time_scale: 0
    models:
      - {name: big, input_price_per_mtok: 3.0, output_price_per_mtok: 15.0}
      - {name: small, input_price_per_mtok: 0.5, output_price_per_mtok: 1.5}
  broken:
    type: sim
    time_scale: 0
    faults: {error_rate: 1.0, error_statuses: [500]}
    models: [{name: big}]
models:
  chat:
    tiers: {fp16: [{backend: sim, model: big}], int4: [{backend: sim, model: small}]}
    default_tier: fp16
  bad: {backend: broken, model: big}
policies:
  - use: max_tokens
    with: {limit: 100, action: deny}
  - use: audit_capture
    with: {content: full, teams: [ml]}
  - use: audit_capture
    with: {content: redacted, teams: [legal]}
limits:
  rate_limits:
    - {name: one-a-minute, scope: key, subject: limited, rpm: 1}
"""

ALICE = Principal(key_id="k-alice", name="alice", user="alice@x", team="ml", org="acme",
                  tags=("prod", "eu"))  # fmt: skip
LEGAL = Principal(key_id="k-legal", name="lawyer", team="legal")
LIMITED = Principal(key_id="k-lim", name="limited", team="web")


def make_call(rid: str, principal: Principal = ALICE, model: str = "chat", **extra: Any) -> Call:
    body: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "user", "content": f"hello from {rid}"}],
        "max_tokens": 5,
        **extra,
    }
    raw = orjson.dumps(body)
    agent = "pytest/\x001" if principal is LEGAL else "pytest/1"  # PostgreSQL text has no NUL
    return Call(rid, "openai", "chat.completions", model, body, body.get("stream") is True,
                False, principal=principal, client_ip="10.0.0.7", user_agent=agent,
                raw_body=raw)  # fmt: skip


@pytest.fixture(params=["sqlite", "postgres"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    with audit_engine(request.param, tmp_path) as made:
        yield made


async def served(pipeline: Pipeline, runtime: Runtime, call: Call) -> None:
    reply = await pipeline.handle(call, runtime)
    reply.seal()
    await reply.done()


async def drive(audited: AuditedPipeline) -> None:
    """One call of each outcome type (request id = what it is)."""
    pipeline, runtime = audited.pipeline, audited.runtime
    for rid, principal, extra in (
        ("served", ALICE, {}),
        ("served-int4", ALICE, {"user": "route-int4"}),  # routed to the cheaper tier
        ("redacted", LEGAL, {"messages": [{"role": "user", "content": "mail bob@corp.com"}]}),
        ("cache-hit", ALICE, {"user": "cache-me"}),
    ):
        await served(pipeline, runtime, make_call(rid, principal, **extra))
    reply = await pipeline.handle(make_call("stream", stream=True), runtime)
    assert reply.stream is not None
    async for _ in reply.stream:
        pass
    await reply.stream.close()
    reply = await pipeline.handle(make_call("gone", stream=True, max_tokens=50), runtime)
    assert reply.stream is not None
    async for _ in reply.stream:
        break
    await reply.stream.close(disconnected=True)
    for rid, principal, model, extra, error in (
        ("policy-denied", ALICE, "chat", {"max_tokens": 500}, PolicyDenied),
        ("rate-limited", LIMITED, "chat", {}, PolicyDenied),
        ("unknown-model", ALICE, "nope", {}, ModelNotFound),
    ):
        if rid == "rate-limited":
            await served(pipeline, runtime, make_call("limited-1", principal))
        with pytest.raises(error):
            await pipeline.handle(make_call(rid, principal, model, **extra), runtime)
    with pytest.raises(UpstreamUnavailable):
        await pipeline.handle(make_call("upstream-500", ALICE, "bad"), runtime)
    bad_key = AuthenticationFailed("Incorrect API key provided.")
    pipeline.rejected(
        bad_key, runtime, ("bad-key", "openai", "chat.completions"), ("10.0.0.9", None)
    )


@pytest.fixture
async def audited(engine: Engine, tmp_path: Path) -> AsyncIterator[AuditedPipeline]:
    transport = httpx.AsyncHTTPTransport()
    deps = make_deps(transport, TokenCounter())
    runtime = with_cache(runtime_from(tmp_path / "t.yaml", CONFIG, deps))
    made = AuditedPipeline(runtime, engine, tmp_path / "journal")
    await drive(made)
    made.close()  # drains the journal into SQL
    yield made
    for backend in runtime.backends.values():
        await backend.aclose()
    await transport.aclose()


def by_request(engine: Engine) -> dict[str, Any]:
    rows = events(engine)
    ids = [r.request_id for r in rows]
    assert len(ids) == len(set(ids)), "one event per request, never two"
    return {r.request_id: r for r in rows}


async def test_every_outcome_is_one_event_with_its_fields(audited: AuditedPipeline) -> None:
    rows = by_request(audited.engine)
    assert sorted(rows) == sorted([
        "served", "served-int4", "redacted", "cache-hit", "stream", "gone", "policy-denied",
        "limited-1", "rate-limited", "unknown-model", "upstream-500", "bad-key",
    ])  # fmt: skip
    outcome = {rid: (r.outcome, r.status) for rid, r in rows.items()}
    assert outcome == {
        "served": ("served", 200), "served-int4": ("served", 200), "redacted": ("served", 200),
        "cache-hit": ("cache_hit", 200), "stream": ("served", 200),
        "gone": ("client_disconnected", 200), "policy-denied": ("denied", 400),
        "limited-1": ("served", 200), "rate-limited": ("denied", 429),
        "unknown-model": ("rejected", 404), "upstream-500": ("upstream_error", 502),
        "bad-key": ("rejected", 401),
    }  # fmt: skip
    served = rows["served"]
    assert (served.key_id, served.key_name, served.user_id, served.team, served.org) == (
        "k-alice", "alice", "alice@x", "ml", "acme",
    )  # fmt: skip
    assert served.tags == ["prod", "eu"]
    assert (served.dialect, served.endpoint, served.model, served.stream) == (
        "openai", "chat.completions", "chat", False,
    )  # fmt: skip
    assert (served.backend, served.tier, served.upstream_model) == ("sim", "fp16", "big")
    assert served.input_tokens > 0 and served.output_tokens == 5
    assert served.usage_estimated is False and served.cache == "bypass"
    assert (served.client_ip, served.user_agent) == ("10.0.0.7", "pytest/1")
    assert served.received_at <= served.first_byte_at <= served.completed_at
    assert served.latency_us >= served.ttft_us >= 0
    prompt = {"messages": [{"role": "user", "content": "hello from served"}]}
    assert (
        served.prompt_sha256
        == hashlib.sha256(orjson.dumps(prompt, option=orjson.OPT_SORT_KEYS)).hexdigest()
    )
    gone = rows["gone"]
    assert gone.stream and gone.error_type == "client_disconnected" and gone.usage_estimated


async def test_money_cost_counterfactual_and_savings_add_up(audited: AuditedPipeline) -> None:
    rows = by_request(audited.engine)
    big = (3_000, 15_000)  # nano-dollars per token at $3 / $15 per 1M
    small = (500, 1_500)
    served, cheap = rows["served"], rows["served-int4"]
    assert served.cost_nanousd == served.input_tokens * big[0] + served.output_tokens * big[1]
    assert served.counterfactual_nanousd == served.cost_nanousd and served.savings_nanousd == 0
    assert cheap.tier == "int4"
    assert cheap.cost_nanousd == cheap.input_tokens * small[0] + cheap.output_tokens * small[1]
    assert (
        cheap.counterfactual_nanousd == cheap.input_tokens * big[0] + cheap.output_tokens * big[1]
    )
    assert cheap.savings_tier_routing_nanousd == cheap.counterfactual_nanousd - cheap.cost_nanousd
    hit = rows["cache-hit"]
    assert hit.cost_nanousd == 0 and hit.cache == "exact"
    assert hit.savings_exact_cache_nanousd == hit.counterfactual_nanousd == 12 * 3_000 + 5 * 15_000
    for r in rows.values():
        parts = sum(getattr(r, c) for c in tables.SAVINGS_COLUMNS)
        assert parts == r.savings_nanousd == r.counterfactual_nanousd - r.cost_nanousd, r.request_id
    for rid in ("policy-denied", "rate-limited", "unknown-model", "upstream-500", "bad-key"):
        assert rows[rid].cost_nanousd == 0, rid


async def test_decisions_are_recorded_with_plugin_and_reason(audited: AuditedPipeline) -> None:
    rows = by_request(audited.engine)
    (deny,) = decisions(audited.engine, rows["policy-denied"].seq)
    assert (deny.plugin, deny.action, deny.enforced) == ("max_tokens", "deny", True)
    assert "exceeds this key's limit of 100" in deny.reason
    (limited,) = decisions(audited.engine, rows["rate-limited"].seq)
    assert (limited.plugin, limited.action) == ("budgets", "deny")
    assert "one-a-minute" in limited.reason
    (answer,) = decisions(audited.engine, rows["cache-hit"].seq)
    assert (answer.plugin, answer.action) == ("cache", "answer")


async def test_content_capture_full_redacted_and_none(audited: AuditedPipeline) -> None:
    rows = by_request(audited.engine)
    full = bodies(audited.engine, rows["served"].seq)
    assert orjson.loads(full["request"])["messages"][0]["content"] == "hello from served"
    assert orjson.loads(full["response"])["object"] == "chat.completion"
    assert rows["served"].request_sha256 == hashlib.sha256(full["request"].encode()).hexdigest()
    redacted = bodies(audited.engine, rows["redacted"].seq)
    assert "bob@corp.com" not in redacted["request"]
    assert "[REDACTED:email]" in redacted["request"]
    assert rows["redacted"].user_agent == "pytest/\ufffd1"
    streamed = bodies(audited.engine, rows["stream"].seq)
    assert streamed["response"].endswith("data: [DONE]\n\n")
    assert bodies(audited.engine, rows["limited-1"].seq) == {}  # team web: capture none
    assert rows["limited-1"].capture == "none" and rows["limited-1"].request_sha256 is None


async def test_untouched_log_verifies(audited: AuditedPipeline) -> None:
    report = verify(audited.engine, signer())
    assert report.ok, [p.describe() for p in report.problems]
    assert report.rows == 12 and report.chains == 1


def _problem(engine: Engine) -> str:
    report = verify(engine, signer())
    assert not report.ok
    (problem,) = report.problems
    return problem.describe()


async def test_verify_names_an_altered_row(audited: AuditedPipeline) -> None:
    target = by_request(audited.engine)["served"]
    ev = tables.events
    with audited.engine.begin() as conn:
        conn.execute(update(ev).where(ev.c.id == target.id).values(cost_nanousd=1))
    found = _problem(audited.engine)
    assert found.startswith("ALTERED") and f"seq {target.seq} " in found
    assert "request served" in found


async def test_verify_names_an_altered_decision(audited: AuditedPipeline) -> None:
    rows = by_request(audited.engine)
    dec = tables.decisions
    with audited.engine.begin() as conn:
        conn.execute(update(dec).where(dec.c.seq == rows["policy-denied"].seq).values(reason="ok"))
    found = _problem(audited.engine)
    assert found.startswith("ALTERED") and "request policy-denied" in found


async def test_verify_names_an_altered_stored_body(audited: AuditedPipeline) -> None:
    rows = by_request(audited.engine)
    bod = tables.bodies
    with audited.engine.begin() as conn:
        conn.execute(
            update(bod)
            .where(bod.c.seq == rows["served"].seq, bod.c.part == "response")
            .values(content="{}")
        )
    found = _problem(audited.engine)
    assert found.startswith("ALTERED") and "stored response body was changed" in found


async def test_verify_names_a_deleted_row(audited: AuditedPipeline) -> None:
    target = by_request(audited.engine)["stream"]
    with audited.engine.begin() as conn:
        conn.execute(delete(tables.events).where(tables.events.c.id == target.id))
    found = _problem(audited.engine)
    assert found.startswith(f"DELETED: chain {target.chain_id} seq {target.seq}:")


async def test_verify_names_a_deleted_tail(audited: AuditedPipeline) -> None:
    last = events(audited.engine)[-1]
    with audited.engine.begin() as conn:
        conn.execute(delete(tables.events).where(tables.events.c.id == last.id))
    assert _problem(audited.engine).startswith(f"DELETED: chain {last.chain_id} seq {last.seq}:")


async def test_verify_names_an_inserted_row(audited: AuditedPipeline) -> None:
    ev = tables.events
    last = events(audited.engine)[-1]
    forged = {k: v for k, v in last._mapping.items() if k != "id"}
    forged.update(seq=last.seq + 1, request_id="forged", prev_hash=last.row_hash)
    with audited.engine.begin() as conn:
        conn.execute(insert(ev).values(**forged))
    found = _problem(audited.engine)
    assert found.startswith("INSERTED") and "request forged" in found


async def test_verify_names_a_row_in_an_unsigned_chain(audited: AuditedPipeline) -> None:
    ev = tables.events
    first = events(audited.engine)[0]
    forged = {k: v for k, v in first._mapping.items() if k != "id"}
    forged.update(chain_id="f" * 32, request_id="forged")
    with audited.engine.begin() as conn:
        conn.execute(insert(ev).values(**forged))
    assert _problem(audited.engine).startswith(f"INSERTED: chain {'f' * 32}")


async def test_verify_catches_a_rewritten_chain_by_its_signature(audited: AuditedPipeline) -> None:
    """Someone who recomputes every hash after an edit still cannot re-sign the head."""
    ch = tables.chains
    with audited.engine.begin() as conn:
        conn.execute(update(ch).values(last_hash="0" * 64))
    assert _problem(audited.engine).startswith("FORGED")


async def test_prune_keeps_the_chain_verifiable(audited: AuditedPipeline) -> None:
    rows = events(audited.engine)
    cut = rows[5].received_at
    done = prune(audited.engine, signer(), cut)
    assert [(d.rows, d.through_seq) for d in done] == [(5, 5)]
    left = events(audited.engine)
    assert [r.seq for r in left] == list(range(6, 13))
    report = verify(audited.engine, signer())
    assert report.ok, [p.describe() for p in report.problems]
    assert report.rows == 7
    with audited.engine.connect() as conn:
        kinds = [r[0] for r in conn.execute(select(tables.checkpoints.c.kind))]
    assert "prune" in kinds


async def test_prune_refuses_to_destroy_evidence(audited: AuditedPipeline) -> None:
    rows = events(audited.engine)
    with audited.engine.begin() as conn:
        conn.execute(update(tables.events).where(tables.events.c.id == rows[1].id).values(status=1))
    with pytest.raises(PruneRefused, match="ALTERED"):
        prune(audited.engine, signer(), rows[5].received_at)
    assert len(events(audited.engine)) == 12


async def test_auditor_views_answer_in_plain_sql(audited: AuditedPipeline) -> None:
    rows = by_request(audited.engine)
    with audited.engine.connect() as conn:
        spend = {
            r.team: r for r in conn.execute(text("SELECT * FROM tollgate_audit_spend_by_team_day"))
        }
        denied = {
            r.request_id: (r.plugin, r.status)
            for r in conn.execute(text("SELECT * FROM tollgate_audit_denied"))
        }
        overrides = {
            (r.request_id, r.plugin, r.action)
            for r in conn.execute(text("SELECT * FROM tollgate_audit_policy_overrides"))
        }
        (cache,) = conn.execute(text("SELECT * FROM tollgate_audit_cache_savings")).all()
    ml = [r for r in rows.values() if r.team == "ml"]
    assert spend["ml"].requests == len(ml)
    assert Decimal(str(spend["ml"].cost_usd)) == Decimal(sum(r.cost_nanousd for r in ml)) / 10**9
    assert denied == {
        "policy-denied": ("max_tokens", 400),
        "rate-limited": ("budgets", 429),
        "unknown-model": (None, 404),
        "bad-key": (None, 401),
    }
    assert ("cache-hit", "cache", "answer") in overrides
    assert cache.cache_hits == 1
    assert (
        Decimal(str(cache.exact_cache_usd))
        == Decimal(rows["cache-hit"].savings_exact_cache_nanousd) / 10**9
    )


async def test_verify_since_checks_from_there_through_the_head(audited: AuditedPipeline) -> None:
    rows = events(audited.engine)
    since = rows[6].received_at
    report = verify(audited.engine, signer(), since)
    assert report.ok and report.rows == len(rows) - 6
    with audited.engine.begin() as conn:
        conn.execute(delete(tables.events).where(tables.events.c.id == rows[2].id))
    assert verify(audited.engine, signer(), since).ok, "before --since: not looked at"
    with audited.engine.begin() as conn:
        conn.execute(update(tables.events).where(tables.events.c.id == rows[9].id).values(status=7))
    assert not verify(audited.engine, signer(), since).ok


def _doc_examples() -> list[str]:
    """The SQL examples under "Views" in docs/audit.md, one statement each."""
    doc = (Path(__file__).resolve().parents[2] / "docs" / "audit.md").read_text()
    views = doc[doc.index("## Views") :]
    block = views[views.index("```sql") + 6 : views.index("```", views.index("```sql") + 6)]
    return [s.strip() for s in block.split(";") if s.strip()]


async def test_the_documented_sql_examples_are_right_on_both_databases(
    audited: AuditedPipeline,
) -> None:
    rows = by_request(audited.engine)
    ev = tables.events
    in_week, before = rows["served"], rows["served-int4"]
    with audited.engine.begin() as conn:  # two ml calls: one in the example's week, one before
        for row, when in ((in_week, "2026-11-24 10:00:00"), (before, "2026-11-10 10:00:00")):
            conn.execute(update(ev).where(ev.c.id == row.id).values(received_at=text(f"'{when}'")))
    examples = _doc_examples()
    assert len(examples) == 5
    with audited.engine.connect() as conn:
        results = [
            conn.execute(text(sql.replace("<sha256>", in_week.prompt_sha256))).all()
            for sql in examples
        ]
    week, _denied_today, dearest, per_team, same_prompt = results
    assert [(str(r.day)[:10], r.requests) for r in week] == [("2026-11-24", 1)]
    exact = Decimal(in_week.cost_nanousd) / 10**9
    assert Decimal(str(week[0].cost_usd)) == exact
    assert str(week[0].cost_usd) == format(exact.quantize(Decimal("0.000000001")), "f")
    assert dearest[0].cost_nanousd == max(r.cost_nanousd for r in rows.values())
    assert sum(r.cost_nanousd for r in per_team) == sum(r.cost_nanousd for r in rows.values())
    assert in_week.request_id in {r.request_id for r in same_prompt}
