"""Shared fixtures. Every test builds what it uses (ports, files, processes) and removes it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
_CACHE = ROOT.parent / "shared" / "tiktoken-cache"
if "TIKTOKEN_CACHE_DIR" not in os.environ and _CACHE.is_dir():
    os.environ["TIKTOKEN_CACHE_DIR"] = str(_CACHE)


@pytest.fixture(scope="session")
def tokens():  # type: ignore[no-untyped-def]
    from gateway.accounting.tokens import TokenCounter

    counter = TokenCounter()
    assert counter.exact, "tests need cl100k_base: set TIKTOKEN_CACHE_DIR"
    return counter
