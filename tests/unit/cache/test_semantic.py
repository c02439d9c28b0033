"""The semantic cache's parts: the vector index (exact for small buckets, HNSW past
BRUTE_MAX), the facts guard, and the labelled set its defaults are measured on."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import gateway
from gateway.cache import vectors
from gateway.cache.guards import same_facts
from gateway.cache.vectors import VectorIndex, unit
from gateway.config.loader import load_config
from gateway.sim.text import lexical_embedding

PAIRS = Path(__file__).resolve().parents[2] / "data" / "semantic_pairs.jsonl"


def vec(seed: int, dims: int = 64) -> np.ndarray:
    v = unit(np.random.default_rng(seed).standard_normal(dims).astype(np.float32))
    assert v is not None
    return v


def test_a_bucket_finds_its_nearest_and_forgets_what_is_removed() -> None:
    index = VectorIndex()
    for i in range(10):
        index.add("ns", "b", f"d{i}", vec(i), 100)
    found = index.search("ns", "b", vec(3), 0.99)
    assert [c.digest for c in found] == ["d3"] and found[0].similarity == pytest.approx(1, abs=1e-5)
    assert index.search("ns", "other-bucket", vec(3), 0.5) == []
    assert index.search("other-ns", "b", vec(3), 0.5) == []
    index.remove("ns", "d3")
    assert index.search("ns", "b", vec(3), 0.99) == []
    assert len(index) == 9


def test_a_large_bucket_moves_to_the_graph_and_still_finds_and_removes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(vectors, "BRUTE_MAX", 50)
    index = VectorIndex()
    for i in range(200):
        index.add("ns", "b", f"d{i}", vec(i), 1000)
    for probe in (0, 77, 199):
        assert index.search("ns", "b", vec(probe), 0.95)[0].digest == f"d{probe}"
    index.remove("ns", "d77")
    assert all(c.digest != "d77" for c in index.search("ns", "b", vec(77), 0.0))


def test_a_namespace_keeps_at_most_its_bound() -> None:
    index = VectorIndex()
    for i in range(20):
        index.add("ns", f"b{i % 3}", f"d{i}", vec(i), 5)
    assert len(index) == 5
    assert index.search("ns", "b0", vec(0), 0.99) == []  # the oldest went
    assert index.search("ns", f"b{19 % 3}", vec(19), 0.99)[0].digest == "d19"


def test_degenerate_vectors_are_refused() -> None:
    assert unit([0.0, 0.0]) is None
    assert unit([]) is None
    assert unit([float("nan"), 1.0]) is None


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("Is it safe to eat raw eggs?", "Is it not safe to eat raw eggs?"),
        ("Why isn't my build working?", "Why is my build working?"),
        ("What were the sales in 2023?", "What were the sales in 2024?"),
        ("Convert 100 Fahrenheit to Celsius.", "Convert 90 Fahrenheit to Celsius."),
        ("How many weeks are in three months?", "How many weeks are in four months?"),
        ("Who founded Microsoft?", "Who founded Apple?"),
        ("What is the population of Tokyo?", "What is the population of Osaka?"),
        ("Paris weather today?", "London weather today?"),
        ("How do I reverse a list in Python?", "How do I reverse a string in Python?"),
        ("What is the boiling point of water?", "What is the freezing point of water?"),
    ],
)
def test_changed_negations_numbers_names_or_terms_never_match(a: str, b: str) -> None:
    assert not same_facts(a, b) and not same_facts(b, a)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("What is the capital of France?", "Tell me the capital city of France."),
        ("How do I reverse a list in Python?", "how can I reverse a python list"),
        ("Is the store open on Sunday?", "Is the store open on Sundays?"),
        ("What's 15 percent of 200?", "15 percent of 200 is what?"),
    ],
)
def test_paraphrases_keep_their_facts(a: str, b: str) -> None:
    assert same_facts(a, b)


def _embedded_threshold() -> float:
    config = load_config(
        Path(gateway.__file__).parent / "defaults" / "embedded.yaml", env={}
    ).config
    cache = config.models["chat"].cache
    assert cache is not None and cache.semantic is not None
    return cache.semantic.threshold


def test_the_labelled_set_at_the_embedded_default_threshold() -> None:
    """Precision first: a wrong answer from cache costs more than a miss. Measured with the
    simulator's lexical embeddings, what the embedded default runs (docs/caching.md)."""
    rows = [json.loads(line) for line in PAIRS.read_text().splitlines()]
    assert len(rows) >= 200 and sum(r["same"] for r in rows) >= 80
    threshold = _embedded_threshold()
    hits = []
    for r in rows:
        a = np.array(lexical_embedding(r["a"], 384, 0))
        b = np.array(lexical_embedding(r["b"], 384, 0))
        hits.append(float(a @ b) >= threshold and same_facts(r["a"], r["b"]))
    true_hits = sum(1 for r, h in zip(rows, hits, strict=True) if h and r["same"])
    false_hits = sum(1 for r, h in zip(rows, hits, strict=True) if h and not r["same"])
    precision = true_hits / (true_hits + false_hits)
    recall = true_hits / sum(r["same"] for r in rows)
    print(f"threshold {threshold}: precision {precision:.3f} recall {recall:.3f}")
    assert precision >= 0.97
    assert recall >= 0.8
