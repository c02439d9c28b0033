"""The response cache in the real pipeline, in front of simulated backends: who may hit whose
entries, what splits entries, what clients and rules ask, faults as misses, the semantic
cache's guards and checks, and what a hit costs (docs/caching.md)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from gateway.accounting.tokens import TokenCounter
from gateway.cache.redis_store import RedisEntries
from gateway.cache.stores import EntryStore, MemoryEntries, StoreFailure
from gateway.call import Call, CallRecord, Principal
from gateway.pipeline import Pipeline, Recorder, Reply
from gateway.runtime import Runtime
from gateway.side_calls import SideCaller
from tests.support.records import Records
from tests.support.runtime import make_deps, runtime_from
from tests.support.services import REDIS_URL, cache_prefix

CONFIG = """
version: 1
auth: {mode: open}
backends:
  gpu: {type: sim, time_scale: 0, models: [{name: m, input_price_per_mtok: 3, output_price_per_mtok: 15}]}
  emb: {type: sim, time_scale: 0, models: [{name: e, kind: embedding, embedding: lexical, dimensions: 384, input_price_per_mtok: 0.02}]}
models:
  chat:
    backend: gpu
    model: m
    cache:
      mode: semantic
      semantic:
        embedding_model: embed
        threshold: THRESHOLD
        verify: {sample: SAMPLE, compare: text, min_samples: 3, window: 3, max_false_rate: 0.3, step: 0.3, max_threshold: 0.9}
  plain: {backend: gpu, model: m}
  embed: {backend: emb, model: e}
"""  # noqa: E501
ALICE = Principal("k-alice", "alice", team="ml")
ALBERT = Principal("k-albert", "albert", team="ml")
BOB = Principal("k-bob", "bob", team="web")
CAROL = Principal("k-carol", "carol", team="ops")


class Harness:
    def __init__(self, tmp: Path, transport: httpx.AsyncBaseTransport, *, threshold: float = 0.6,
                 sample: float = 0.0, extra: str = "", store: Any = None,
                 edit: Any = None) -> None:  # fmt: skip
        tmp.mkdir(parents=True, exist_ok=True)
        side = SideCaller()
        deps = make_deps(transport, TokenCounter())
        fields = {f: getattr(deps, f) for f in deps.__dataclass_fields__}
        fields["side_calls"] = side
        if store is not None:
            fields["cache"] = type(deps.cache)(store)
        deps = type(deps)(**fields)
        self.deps = deps
        text = CONFIG.replace("THRESHOLD", str(threshold)).replace("SAMPLE", str(sample)) + extra
        text = edit(text) if edit is not None else text
        self.runtime: Runtime = runtime_from(tmp / "t.yaml", text, deps)
        self.sink = Records()
        self.pipeline = Pipeline(Recorder(self.sink, TokenCounter()))  # type: ignore[arg-type]
        side.bind(self.pipeline, lambda: self.runtime)

    async def reply(self, who: Principal, question: str | list[dict[str, Any]], *,
                    model: str = "chat", headers: dict[str, str] | None = None,
                    **body: Any) -> tuple[Reply, CallRecord]:  # fmt: skip
        messages = (
            [{"role": "user", "content": question}] if isinstance(question, str) else question
        )
        payload = {"model": model, "messages": messages, "max_tokens": 8, "temperature": 0, **body}
        raw = [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
        call = Call(f"r{len(self.sink.records)}", "openai", "chat.completions", model, payload,
                    False, False, principal=who, raw_headers=raw)  # fmt: skip
        reply = await self.pipeline.handle(call, self.runtime)
        reply.seal()
        await reply.done()
        return reply, next(r for r in self.sink.records if r.request_id == call.request_id)

    async def ask(self, who: Principal, question: str | list[dict[str, Any]], **kw: Any) -> str:
        reply, _ = await self.reply(who, question, **kw)
        return dict(reply.headers)["x-tollgate-cache"]

    @property
    def cache(self) -> Any:
        return self.runtime.cache.shared


@pytest.fixture
async def transport() -> AsyncIterator[httpx.AsyncHTTPTransport]:
    t = httpx.AsyncHTTPTransport()
    yield t
    await t.aclose()


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[EntryStore]:
    """The embedded store, and a real Redis under a fresh key prefix (removed afterwards)."""
    if request.param == "memory":
        yield MemoryEntries()
        return
    with cache_prefix() as prefix:
        shared = RedisEntries(REDIS_URL, prefix, 2.0, l1_entries=100)
        yield shared
        await shared.aclose()


async def test_no_tenant_ever_gets_another_tenants_answer(
    tmp_path: Path, transport: httpx.AsyncHTTPTransport, store: EntryStore
) -> None:
    h = Harness(tmp_path, transport, store=store)
    assert await h.ask(ALICE, "What is the capital of France?") == "miss"
    # Built to hit: the same words, and a close paraphrase, from another team.
    assert await h.ask(BOB, "What is the capital of France?") == "miss"
    assert await h.ask(CAROL, "Tell me the capital city of France.") == "miss"
    # The owner's team hits both ways.
    assert await h.ask(ALBERT, "What is the capital of France?") == "exact"
    assert await h.ask(ALICE, "what's the capital of france") == "semantic"
    assert h.cache.counts["exact"] == 1 and h.cache.counts["semantic"] == 1


async def test_a_poisoned_entry_cannot_cross_namespaces(
    tmp_path: Path, transport: httpx.AsyncHTTPTransport
) -> None:
    h = Harness(tmp_path, transport)
    await h.ask(BOB, "What is the capital of France?")
    (space,) = h.cache.store.namespaces()
    (digest,) = h.cache.store.digests(space)
    # Whatever lands under bob's namespace (his entry, a forged one) is never alice's.
    await h.cache.store.put(
        space, digest, b'{"v":1,"body":{"choices":[]},"u":[0,0,0,0],"created":1}', 60, 10
    )
    assert await h.ask(ALICE, "What is the capital of France?") == "miss"


@pytest.mark.parametrize(
    "change",
    [{"temperature": 0, "seed": 7}, {"max_tokens": 9}, {"top_p": 0.5}, {"n": 2},
     {"response_format": {"type": "json_object"}}, {"stop": ["."]},
     {"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]}],
)  # fmt: skip
async def test_a_changed_parameter_never_returns_the_stored_answer(
    tmp_path: Path, transport: httpx.AsyncHTTPTransport, change: dict[str, Any], store: EntryStore
) -> None:
    h = Harness(tmp_path, transport, store=store)
    await h.ask(ALICE, "What is the capital of France?")
    assert await h.ask(ALICE, "What is the capital of France?", **change) == "miss"
    assert await h.ask(ALICE, "What is the capital of France?", **change) == "exact"


async def test_a_different_system_prompt_or_history_never_hits_semantically(
    tmp_path: Path, transport: httpx.AsyncHTTPTransport
) -> None:
    h = Harness(tmp_path, transport)
    base = [{"role": "system", "content": "Answer in French."},
            {"role": "user", "content": "What is the capital of France?"}]  # fmt: skip
    await h.ask(ALICE, base)
    other = [{"role": "system", "content": "Answer in German."}, base[1]]
    assert await h.ask(ALICE, other) == "miss"
    longer = [base[0], {"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
              {"role": "user", "content": "Tell me the capital city of France."}]  # fmt: skip
    assert await h.ask(ALICE, longer) == "miss"
    para = [base[0], {"role": "user", "content": "Tell me the capital city of France."}]
    assert await h.ask(ALICE, para) == "semantic"


async def test_near_questions_about_other_facts_are_refused(
    tmp_path: Path, transport: httpx.AsyncHTTPTransport
) -> None:
    h = Harness(tmp_path, transport, threshold=0.3)
    await h.ask(ALICE, "Is it safe to eat raw eggs?")
    await h.ask(ALICE, "What were the sales in 2023?")
    assert await h.ask(ALICE, "Is it not safe to eat raw eggs?") == "miss"
    assert await h.ask(ALICE, "What were the sales in 2024?") == "miss"
    assert h.cache.counts["facts_refused"] == 2


async def test_clients_cache_control_is_honoured(
    tmp_path: Path, transport: httpx.AsyncHTTPTransport
) -> None:
    h = Harness(tmp_path, transport)
    q = "What is the capital of France?"
    assert await h.ask(ALICE, q, headers={"cache-control": "no-store"}) == "miss"
    assert await h.ask(ALICE, q) == "miss"  # nothing was kept; this one is
    assert await h.ask(ALICE, q, headers={"cache-control": "no-cache"}) == "miss"  # not looked up
    assert await h.ask(ALICE, q) == "exact"
    assert await h.ask(ALICE, q, headers={"cache-control": "no-cache, no-store"}) == "bypass"


async def test_only_deterministic_requests_unless_the_alias_opts_in(
    tmp_path: Path, transport: httpx.AsyncHTTPTransport
) -> None:
    h = Harness(tmp_path, transport)
    assert await h.ask(ALICE, "hello there", temperature=0.8) == "bypass"
    assert await h.ask(ALICE, "hello there", temperature=0.8) == "bypass"
    opt_in = "mode: semantic\n      nondeterministic: true"
    opted = Harness(tmp_path / "o", transport, edit=lambda t: t.replace("mode: semantic", opt_in))
    assert await opted.ask(ALICE, "hello there", temperature=0.8) == "miss"
    assert await opted.ask(ALICE, "hello there", temperature=0.8) == "exact"


RULES = """
policies:
  - use: rules
    with:
      rules:
        - {name: no-cache-for-web, match: {team: web}, actions: {cache: "off"}}
        - {name: cache-plain, match: {model: plain}, actions: {cache: exact}}
"""


async def test_a_rule_sets_the_cache_mode(
    tmp_path: Path, transport: httpx.AsyncHTTPTransport
) -> None:
    h = Harness(tmp_path, transport, extra=RULES)
    q = "What is the capital of France?"
    assert await h.ask(BOB, q) == "bypass"
    assert await h.ask(BOB, q) == "bypass"
    # An alias with no cache of its own is cached where a rule says so.
    assert await h.ask(ALICE, q, model="plain") == "miss"
    reply, record = await h.reply(ALICE, q, model="plain")
    assert dict(reply.headers)["x-tollgate-cache"] == "exact"
    assert any(d.plugin == "rules" and "cache mode exact" in d.reason for d in record.decisions)


class Broken(MemoryEntries):
    async def get(self, namespace: str, digest: str) -> bytes | None:
        raise StoreFailure("redis cache store: TimeoutError")

    async def put(self, *args: Any) -> None:
        raise StoreFailure("redis cache store: TimeoutError")


async def test_a_failing_store_is_a_miss_and_the_client_is_served(
    tmp_path: Path, transport: httpx.AsyncHTTPTransport
) -> None:
    h = Harness(tmp_path, transport, store=Broken())
    for _ in range(2):
        reply, record = await h.reply(ALICE, "What is the capital of France?")
        assert reply.status == 200 and record.cache == "miss" and record.backend == "gpu"
    assert h.cache.counts["store_failures"] == 4


class Buggy(MemoryEntries):
    async def get(self, namespace: str, digest: str) -> bytes | None:
        raise RuntimeError("a bug in a store")


async def test_a_cache_that_breaks_unexpectedly_is_still_a_miss(
    tmp_path: Path, transport: httpx.AsyncHTTPTransport
) -> None:
    h = Harness(tmp_path, transport, store=Buggy())
    reply, record = await h.reply(ALICE, "What is the capital of France?")
    assert reply.status == 200 and record.cache == "miss" and record.backend == "gpu"
    assert h.cache.counts["lookup_errors"] == 1


async def test_an_entry_that_fails_to_decode_is_dropped_for_a_fresh_answer(
    tmp_path: Path, transport: httpx.AsyncHTTPTransport
) -> None:
    h = Harness(tmp_path, transport)
    await h.ask(ALICE, "What is the capital of France?")
    (space,) = h.cache.store.namespaces()
    (digest,) = h.cache.store.digests(space)
    await h.cache.store.put(space, digest, b"\x00garbage", 60, 10)
    reply, record = await h.reply(ALICE, "What is the capital of France?")
    assert reply.status == 200 and record.cache == "miss" and record.backend == "gpu"
    assert h.cache.counts["decode_failures"] >= 1
    assert await h.ask(ALICE, "What is the capital of France?") == "exact"  # stored afresh


async def test_a_hit_costs_nothing_and_saves_what_the_call_would_have_cost(
    tmp_path: Path, transport: httpx.AsyncHTTPTransport
) -> None:
    h = Harness(tmp_path, transport)
    _, first = await h.reply(ALICE, "What is the capital of France?")
    _, exact = await h.reply(ALICE, "What is the capital of France?")
    _, semantic = await h.reply(ALICE, "Tell me the capital city of France.")
    assert first.money.cost > 0
    assert exact.money.cost == 0 and exact.money.counterfactual == first.money.cost
    assert exact.money.savings == (("exact_cache", first.money.cost),)
    assert semantic.cache == "semantic" and semantic.money.cost == 0
    assert semantic.money.saving("semantic_cache") == semantic.money.counterfactual > 0
    # Each semantic lookup's embedding (not an exact hit's: none is made) is its own line,
    # charged to the caller.
    embeds = [r for r in h.sink.records if r.model == "embed"]
    assert len(embeds) == 2 and all(r.principal == ALICE and r.money.cost > 0 for r in embeds)
    similarity = [d.reason for d in semantic.decisions if d.plugin == "cache"]
    assert similarity and "similarity 0." in similarity[0]


async def test_sampled_checks_find_false_hits_and_tighten_the_threshold(
    tmp_path: Path, transport: httpx.AsyncHTTPTransport
) -> None:
    """A deliberately loose threshold lets unrelated questions hit; every hit is checked (the
    simulator answers each question its own way), and the namespace tightens, then stops."""
    h = Harness(tmp_path, transport, threshold=0.05, sample=1.0)
    await h.ask(ALICE, "Tell me about the weather")
    verifier = h.cache.verifier
    hits = 0
    for i in range(12):
        if (
            await h.ask(ALICE, f"Tell me about the weather please now {'really ' * i}")
            == "semantic"
        ):
            hits += 1
        await verifier.drain()
    (state,) = verifier.spaces.values()
    assert hits >= 3 and state.checks >= 3 and state.false_hits >= 3
    assert state.threshold > 0.05
    assert state.off  # 0.05 -> 0.35 -> 0.65 -> 0.95 > max_threshold 0.9: switched off
    checks = [r for r in h.sink.records if r.request_id.endswith("-verify")]
    assert checks and all(
        r.principal.team == "cache-verifier" and r.cache == "bypass" for r in checks
    )


async def test_embeddings_are_cached_exactly(
    tmp_path: Path, transport: httpx.AsyncHTTPTransport
) -> None:
    cached = "  embed: {backend: emb, model: e, cache: {}}"
    h = Harness(
        tmp_path, transport, edit=lambda t: t.replace("  embed: {backend: emb, model: e}", cached)
    )

    async def embed() -> str:
        body = {"model": "embed", "input": ["some text"]}
        call = Call(f"e{len(h.sink.records)}", "openai", "embeddings", "embed", body, False, False,
                    principal=ALICE)  # fmt: skip
        reply = await h.pipeline.handle(call, h.runtime)
        reply.seal()
        await reply.done()
        assert orjson.loads(reply.body)["data"][0]["embedding"]
        return dict(reply.headers)["x-tollgate-cache"]

    assert [await embed(), await embed()] == ["miss", "exact"]


async def test_checks_compare_prose_by_the_cache_s_own_embeddings(
    tmp_path: Path, transport: httpx.AsyncHTTPTransport
) -> None:
    """`compare: embedding` (and `auto` on prose) needs embeddings: the semantic cache's own
    model, through the pipeline, charged to the checks' team."""
    h = Harness(tmp_path, transport, threshold=0.3, sample=1.0,
                edit=lambda t: t.replace("compare: text", "compare: embedding"))  # fmt: skip
    await h.ask(ALICE, "Tell me about the weather in Paris")
    assert await h.ask(ALICE, "Tell me about the weather in Paris today") == "semantic"
    await h.cache.verifier.drain()
    (state,) = h.cache.verifier.spaces.values()
    assert state.checks == 1 and state.errors == 0
    embeds = [
        r for r in h.sink.records if r.model == "embed" and r.principal.team == "cache-verifier"
    ]
    assert len(embeds) == 1


BUDGETS = """
limits:
  budgets: [{name: team-day, scope: team, subject: "*", tokens: 1000000, window: day}]
policies:
  - use: budgets
"""


async def test_a_hit_spends_nothing_against_budgets(
    tmp_path: Path, transport: httpx.AsyncHTTPTransport
) -> None:
    h = Harness(tmp_path, transport, extra=BUDGETS)
    _, first = await h.reply(ALICE, "What is the capital of France?")
    for _ in range(5):
        _, hit = await h.reply(ALICE, "What is the capital of France?")
        assert hit.cache == "exact"
    spend = (await h.deps.ledger.spend("team", "day"))["ml"]
    # What was served upstream: the first call and its lookup's embedding; none of the hits.
    upstream = [r for r in h.sink.records if r.backend is not None]
    assert len(upstream) == 2 and spend["req"] == 2
    assert spend["usd"] == sum(r.money.cost for r in upstream) > first.money.cost
    assert spend["in"] == sum(r.usage.input_tokens for r in upstream if r.usage)
