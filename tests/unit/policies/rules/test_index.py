"""The rule index answers exactly what testing each rule's conditions in turn answers (the
explanation's way), for random rules and calls."""

from __future__ import annotations

import random
from zoneinfo import ZoneInfo

import orjson

from gateway.accounting.tokens import TokenCounter
from gateway.call import Call, Principal
from gateway.policies.rules.conditions import Facts, compile_match
from gateway.policies.rules.index import RuleIndex
from gateway.policies.rules.schema import Match

MODELS, TEAMS, TAGS = ["chat", "code", "embed"], ["ml", "web", None], ["bulk", "vip", "x"]


def random_match(rng: random.Random) -> Match:
    spec: dict[str, object] = {}
    if rng.random() < 0.6:
        spec["model"] = rng.choice(MODELS) if rng.random() < 0.5 else rng.sample(MODELS, 2)
    if rng.random() < 0.4:
        spec["team"] = rng.choice(["ml", "web"])
    if rng.random() < 0.3:
        spec["tags"] = rng.sample(TAGS, rng.randint(1, 2))
    if rng.random() < 0.3:
        spec["headers"] = {"x-priority": rng.choice(["high", "low", "*"])}
    if rng.random() < 0.3:
        spec["stream"] = rng.random() < 0.5
    if rng.random() < 0.2:
        spec["tools"] = rng.random() < 0.5
    if rng.random() < 0.3:
        spec["max_tokens"] = {"max": rng.choice([10, 100, 1000])}
    if rng.random() < 0.2:
        spec["time"] = {"days": ["mon", "tue"], "hours": "09:00-17:00"}
    return Match.model_validate_json(orjson.dumps(spec))  # as the loader validates: JSON mode


def random_call(rng: random.Random) -> Call:
    body: dict[str, object] = {"messages": [{"role": "user", "content": "hi"}]}
    if rng.random() < 0.7:
        body["max_tokens"] = rng.choice([5, 50, 500, 5000])
    if rng.random() < 0.3:
        body["tools"] = [{"type": "function", "function": {"name": "f"}}]
    headers = (
        [(b"x-priority", rng.choice([b"high", b"low", b" high "]))] if rng.random() < 0.5 else []
    )
    principal = Principal(
        "k", "k", team=rng.choice(TEAMS), tags=tuple(rng.sample(TAGS, rng.randint(0, 2)))
    )
    stream = rng.random() < 0.5
    model = rng.choice(MODELS)
    return Call("r", "openai", "chat.completions", model, body, stream, False,  # type: ignore[arg-type]
                principal=principal, raw_headers=headers)  # fmt: skip


def test_the_index_agrees_with_testing_every_condition() -> None:
    rng = random.Random(20261201)
    zone = ZoneInfo("Europe/Paris")
    for _ in range(200):
        matches = [random_match(rng) for _ in range(rng.randint(1, 12))]
        index = RuleIndex(matches)
        naive = [compile_match(m) for m in matches]
        for _ in range(20):
            call = random_call(rng)
            when = rng.uniform(1.79e9, 1.80e9)
            facts = Facts(call, TokenCounter(), zone, lambda at=when: at)
            expected = [i for i, conds in enumerate(naive) if all(c.test(facts) for c in conds)]
            assert list(index.matching(facts)) == expected, (matches, call)
