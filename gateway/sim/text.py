"""Deterministic output: the same seed and request always produce the same tokens and vectors."""

from __future__ import annotations

import base64
import hashlib
import math
import random
import re
import struct
from collections.abc import Sequence

# Each word with its leading space is one cl100k_base token (checked by a test), so a text of
# n words is exactly n tokens, and exactly n for the fallback estimator too.
_WORDS = """
    the of and to in is you that it he was for on are as with his they at be this have from or
    one had by word but not what all were we when your can said there use an each which she do
    how their if will up other about out many then them these so some her would make like him
    into time has look two more write go see number no way could people my than first water
    been call who oil its now find long down day did get come made may part
"""
VOCABULARY: tuple[str, ...] = tuple(" " + w for w in _WORDS.split())


def seed_of(*parts: object) -> int:
    """A process-independent seed (Python's str hash is randomized per process)."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def words(seed: int, count: int) -> list[str]:
    return random.Random(seed).choices(VOCABULARY, k=count)


def apply_stop(pieces: Sequence[str], stops: Sequence[str]) -> tuple[list[str], str | None]:
    """Pieces up to (not including) the earliest stop string, and the stop string hit."""
    text = "".join(pieces)
    hits = sorted((at, stop) for stop in stops if stop and (at := text.find(stop)) >= 0)
    if not hits:
        return list(pieces), None
    cut, matched = hits[0]
    kept: list[str] = []
    length = 0
    for piece in pieces:
        if length + len(piece) > cut:
            if cut > length:
                kept.append(piece[: cut - length])
            break
        kept.append(piece)
        length += len(piece)
    return kept, matched


def embedding(text: str, dimensions: int, seed: int) -> list[float]:
    """A unit vector derived only from the text (and the server seed)."""
    rng = random.Random(seed_of("embed", seed, text))
    vector = [rng.gauss(0.0, 1.0) for _ in range(dimensions)]
    norm = math.sqrt(sum(v * v for v in vector)) or 1.0
    return [v / norm for v in vector]


_WORD = re.compile(r"[a-z0-9]+")
# Words that carry little of a question's meaning: weighted down, not dropped (negations and
# numbers are deliberately absent: they change the meaning).
_LIGHT = frozenset(
    [
        "a",
        "an",
        "the",
        "is",
        "are",
        "was",
        "were",
        "be",
        "been",
        "do",
        "does",
        "did",
        "of",
        "to",
        "in",
        "on",
        "at",
        "for",
        "with",
        "by",
        "and",
        "or",
        "what",
        "how",
        "why",
        "when",
        "where",
        "which",
        "who",
        "can",
        "could",
        "would",
        "should",
        "will",
        "i",
        "me",
        "my",
        "you",
        "your",
        "it",
        "this",
        "that",
        "please",
        "tell",
        "give",
        "explain",
        "show",
        "about",
    ]
)


def lexical_embedding(text: str, dimensions: int, seed: int) -> list[float]:
    """A unit vector from the text's words, word pairs and character trigrams, hashed into
    `dimensions` signed buckets: texts sharing words score high, unrelated texts near zero.
    What a real embedding model does for paraphrases, cheaply and with no model to download
    (the semantic cache's tests and the embedded default use it)."""
    words = [_stem(w) for w in _WORD.findall(text.lower())]
    vector = [0.0] * dimensions
    features: list[tuple[str, float]] = []
    for i, word in enumerate(words):
        features.append((word, 0.25 if word in _LIGHT else 1.0))
        if i:
            features.append((words[i - 1] + " " + word, 0.5))
        padded = f"<{word}>"
        features.extend((padded[j : j + 3], 0.15) for j in range(len(padded) - 2))
    for feature, weight in features:
        h = int.from_bytes(hashlib.blake2b(f"{seed}:{feature}".encode(), digest_size=8).digest())
        vector[h % dimensions] += weight if (h >> 32) & 1 else -weight
    norm = math.sqrt(sum(v * v for v in vector)) or 1.0
    return [v / norm for v in vector]


def _stem(word: str) -> str:
    for suffix in ("ing", "ies", "es", "s", "ed"):
        if len(word) > len(suffix) + 2 and word.endswith(suffix):
            return word[: -len(suffix)] + ("y" if suffix == "ies" else "")
    return word


def pack_base64(vector: Sequence[float]) -> str:
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
