"""The cache stage: looked up after the policies (rules may set a call's cache mode) and
before routing; an answer is stored after the client has it. docs/caching.md

`ResponseCache` is what outlives config reloads (the store, the vector index, the semantic
checks' verdicts, the counters); `CacheStage` is one runtime's view of it: which alias
caches what, and the router that names the tier a call would be served from (part of the
key: a quantized tier's answer is not the full-precision tier's).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from hashlib import blake2b
from typing import Any

import numpy as np
import orjson

from gateway.cache import keys
from gateway.cache.entry import Entry, captured
from gateway.cache.guards import same_facts
from gateway.cache.stores import EntryStore, StoreFailure, VectorItem
from gateway.cache.vectors import Vector, VectorIndex, unit
from gateway.cache.verify import Verifier
from gateway.call import Call, Decision, Outcome, Principal
from gateway.config.cache_schema import AliasCache, SemanticConfig
from gateway.policies.base import SideCalls
from gateway.policies.rules.schema import CACHE_LABEL
from gateway.routing.router import Router

log = logging.getLogger("gateway.cache")
MODE_LABEL = CACHE_LABEL  # a call's cache mode: a rule's, or "off" on the gateway's own checks
_RULE_DEFAULT = AliasCache()  # what a rule's `cache` action means on an alias with no `cache:`
_STATE = "cache"  # call.state: this stage's plan between lookup and store
VERIFIER = Principal(key_id="cache-verifier", name="cache-verifier", team="cache-verifier")


@dataclass(frozen=True, slots=True)
class Semantic:
    bucket: str
    question: str
    vector: Vector


@dataclass(frozen=True, slots=True)
class Plan:
    """What the lookup decided, for the store after the answer."""

    settings: AliasCache
    key: keys.CacheKey
    store: bool
    semantic: Semantic | None = None


class ResponseCache:
    def __init__(
        self,
        store: EntryStore,
        verifier: Verifier | None = None,
        sync_seconds: float = 0.5,
    ) -> None:
        self.store = store
        self.index = VectorIndex()
        self.verifier = verifier or Verifier()
        self.counts: Counter[str] = Counter()
        self._sync_seconds = sync_seconds
        self._cursor = ""
        self._limits: dict[str, int] = {}  # namespace -> max entries, as last configured
        self._syncing: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Keeps the vector index in step with the store's (other gateways' entries); an
        in-process store has nobody else's to learn, and an idle gateway stays idle."""
        if self._syncing is None and self.store.shared:
            self._syncing = asyncio.create_task(self._sync_forever())

    async def sync(self) -> int:
        """Indexes what was published since the last call; the number indexed."""
        added = 0
        while True:
            items, self._cursor = await self.store.vectors(self._cursor)
            for item in items:
                vector = unit(np.frombuffer(item.vector, dtype=np.float32))
                if vector is not None:
                    limit = self._limits.get(item.namespace, 100_000)
                    self.index.add(item.namespace, item.bucket, item.digest, vector, limit)
                    added += 1
            if not items:
                return added
            await asyncio.sleep(0)  # catching up must not starve the calls being served

    async def _sync_forever(self) -> None:
        while True:
            try:
                await self.sync()
            except StoreFailure as err:
                self.counts["store_failures"] += 1
                failures = self.counts["sync_failures"] = self.counts["sync_failures"] + 1
                if failures % 100 == 1:  # an outage is said once, not twice a second
                    log.warning("semantic index sync: %s (failed %d times)", err, failures)
            except Exception:
                log.exception("semantic index sync failed")
            await asyncio.sleep(self._sync_seconds)

    async def aclose(self) -> None:
        if self._syncing is not None:
            self._syncing.cancel()
            await asyncio.gather(self._syncing, return_exceptions=True)
        await self.verifier.aclose()
        await self.store.aclose()

    async def get(self, key: keys.CacheKey) -> Entry | None:
        try:
            raw = await self.store.get(key.namespace, key.digest)
        except StoreFailure as err:
            self.counts["store_failures"] += 1
            log.warning("cache lookup missed: %s", err)
            return None
        if raw is None:
            return None
        entry = Entry.decode(raw)
        if entry is None:
            self.counts["decode_failures"] += 1
        return entry

    async def put(self, plan: Plan, entry: Entry) -> None:
        value = entry.encode()
        settings, key = plan.settings, plan.key
        if len(value) > settings.max_entry_bytes:
            self.counts["too_large"] += 1
            return
        try:
            await self.store.put(
                key.namespace, key.digest, value, settings.ttl_seconds, settings.max_entries
            )
            self.counts["stored"] += 1
            if plan.semantic is not None:
                s = plan.semantic
                self._limits[key.namespace] = settings.max_entries
                self.index.add(key.namespace, s.bucket, key.digest, s.vector, settings.max_entries)
                item = VectorItem(key.namespace, s.bucket, key.digest, s.vector.tobytes())
                await self.store.publish(item, settings.ttl_seconds)
        except StoreFailure as err:
            self.counts["store_failures"] += 1
            log.warning("cache store skipped: %s", err)


class CacheStage:
    def __init__(
        self,
        shared: ResponseCache,
        aliases: Mapping[str, AliasCache],
        side_calls: SideCalls | None = None,
    ) -> None:
        self.shared = shared
        self.aliases = aliases
        self.side_calls = side_calls  # embeddings and checks go through the whole pipeline

    async def lookup(self, call: Call, outcome: Outcome, router: Router) -> Entry | None:
        """The entry answering this call, or None (then `outcome.cache` says miss or bypass,
        and the call carries the plan for storing its answer). Total: a cache that fails in
        any way is a miss, never the client's error."""
        try:
            return await self._lookup(call, outcome, router)
        except Exception:
            self.shared.counts["lookup_errors"] += 1
            log.exception("cache lookup for call %s failed; served as a miss", call.request_id)
            outcome.cache = "miss" if outcome.cache != "bypass" else "bypass"
            return None

    async def _lookup(self, call: Call, outcome: Outcome, router: Router) -> Entry | None:
        outcome.cache = "bypass"
        ruled = call.labels.get(MODE_LABEL)
        settings = self.aliases.get(call.model) or (_RULE_DEFAULT if ruled else None)
        if settings is None:
            return None
        mode = ruled or settings.mode
        if mode == "off" or call.endpoint not in keys.CACHED_ENDPOINTS:
            return None
        control = (call.header("cache-control") or "").lower()
        read, write = "no-cache" not in control, "no-store" not in control
        if not (read or write) or (not settings.nondeterministic and not keys.deterministic(call)):
            return None
        if call.stream and call.body.get("logprobs"):
            return None  # a replayed stream could not carry them
        step = router.steps(call.model, call.route)[0]
        request = keys.canonical(call)
        key = keys.CacheKey(
            keys.namespace(step.alias, settings, call.principal),
            keys.digest(call, step.alias, step.tier.name, request),
        )
        outcome.cache = "miss"
        semantic = None
        if read:
            entry = await self.shared.get(key)
            if entry is not None:
                outcome.cache = "exact"
                self.shared.counts["exact"] += 1
                return entry
            if mode == "semantic" and settings.semantic is not None:
                found, semantic = await self._semantic(call, settings, key, request, step.tier.name)
                if found is not None:
                    outcome.cache = "semantic"
                    return found
        self.shared.counts["miss"] += 1
        if write:
            call.state[_STATE] = Plan(settings, key, True, semantic)
            call.keep_response = True
        return None

    async def _semantic(
        self,
        call: Call,
        settings: AliasCache,
        key: keys.CacheKey,
        request: dict[str, Any],
        tier: str,
    ) -> tuple[Entry | None, Semantic | None]:
        assert settings.semantic is not None
        config = settings.semantic
        split = keys.last_user_turn(request) if call.endpoint != "embeddings" else None
        if split is None or len(split[0]) > config.max_chars:
            return None, None
        verdicts = self.shared.verifier.state(key.namespace, config.threshold)
        question, rest = split
        vector = await self._embed(call, config.embedding_model, question)
        if vector is None:
            return None, None
        material = orjson.dumps([key.namespace, tier, rest], option=orjson.OPT_SORT_KEYS)
        bucket = blake2b(material, digest_size=16).hexdigest()
        semantic = Semantic(bucket, question, vector)
        if verdicts.off:
            return None, semantic
        floor = verdicts.threshold
        for candidate in self.shared.index.search(key.namespace, bucket, vector, floor):
            entry = await self.shared.get(keys.CacheKey(key.namespace, candidate.digest))
            if entry is None:
                self.shared.index.remove(key.namespace, candidate.digest)
                continue
            if entry.question is None or not same_facts(question, entry.question):
                self.shared.counts["facts_refused"] += 1
                continue
            self._hit(call, entry, candidate.similarity, verdicts.threshold, key.namespace, config)
            return entry, None
        return None, semantic

    def _hit(self, call: Call, entry: Entry, similarity: float, threshold: float,
             namespace: str, settings: SemanticConfig) -> None:  # fmt: skip
        self.shared.counts["semantic"] += 1
        call.labels["notice.cache-similarity"] = f"{similarity:.4f}"
        reason = (
            f"semantic hit: similarity {similarity:.4f} (threshold {threshold:.3f}) "
            f"to the answered question {entry.question!r}"
        )
        call.decide(Decision("cache", "answer", reason))
        side = self.side_calls
        if side is not None and self.shared.verifier.sampled(settings.verify):
            self.shared.counts["verified"] += 1
            reference = self._reference_call(call)
            model = settings.embedding_model

            async def embed(texts: Sequence[str]) -> list[list[float]] | None:
                return await self._embed_texts(reference, model, texts)

            self.shared.verifier.check(
                namespace, entry, lambda: side.run(reference), settings.verify, call.dialect,
                embed,
            )  # fmt: skip

    @staticmethod
    def _reference_call(call: Call) -> Call:
        body = {k: v for k, v in call.body.items() if k not in ("stream", "stream_options")}
        check = Call(f"{call.request_id}-verify", call.dialect, call.endpoint, call.model, body,
                     False, False, principal=VERIFIER, route=call.route)  # fmt: skip
        check.labels[MODE_LABEL] = "off"
        check.decide(Decision("cache", "note",
                              f"semantic cache check of request {call.request_id}"))  # fmt: skip
        return check

    async def _embed(self, call: Call, alias: str, text: str) -> Vector | None:
        vectors = await self._embed_texts(call, alias, [text])
        vector = unit(vectors[0]) if vectors else None
        if vector is None:
            self.shared.counts["embed_failures"] += 1
        return vector

    async def _embed_texts(
        self, call: Call, alias: str, texts: Sequence[str]
    ) -> list[list[float]] | None:
        """Embeddings through the whole pipeline: the call is its own audited, priced line,
        charged to `call`'s principal. None when it failed, whatever the way."""
        side = self.side_calls
        if side is None:
            return None
        body = {"model": alias, "input": list(texts), "encoding_format": "float"}
        probe = Call(f"{call.request_id}-embed", "openai", "embeddings", alias, body, False,
                     False, principal=call.principal)  # fmt: skip
        probe.decide(Decision("cache", "note", f"semantic cache, for request {call.request_id}"))
        try:
            status, raw = await side.run(probe)
            if status != 200:
                return None
            data = sorted(orjson.loads(raw)["data"], key=lambda d: d.get("index", 0))
            vectors = [list(d["embedding"]) for d in data]
            return vectors if len(vectors) == len(texts) else None
        except Exception:  # whatever the embedding call did, the lookup goes on without it
            log.warning("semantic cache: the embedding for call %s failed", call.request_id,
                        exc_info=True)  # fmt: skip
            return None

    async def store(self, call: Call, outcome: Outcome) -> None:
        """Keeps a successful, complete answer (after the client has it)."""
        plan = call.state.get(_STATE)
        if not isinstance(plan, Plan) or not plan.store:
            return
        body, usage = outcome.response_body, outcome.usage
        if (
            outcome.status != 200 or outcome.partial or outcome.disconnected
            or body is None or usage is None or outcome.cache != "miss"
        ):  # fmt: skip
            return
        entry = captured(call, body, usage, time.time())
        if entry is None:
            return
        if plan.semantic is not None:
            entry = dataclasses.replace(entry, question=plan.semantic.question)
        await self.shared.put(plan, entry)
