from __future__ import annotations

import logging

import pytest

from gateway.accounting.tokens import TokenCounter


def test_exact_counts_with_cl100k(tokens: TokenCounter) -> None:
    assert tokens.exact
    assert tokens.count("hello world") == 2
    assert tokens.count_prompt([1, 2, 3]) == 3


def test_unavailable_encoding_falls_back_to_an_estimate_and_logs_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="gateway.tokens"):
        counter = TokenCounter("no_such_encoding")
    assert not counter.exact
    assert counter.count("hello, world") == 3  # words and punctuation
    assert counter.encode("a b") == counter.encode("a b")  # stable pseudo-ids
    assert sum("unavailable" in r.getMessage() for r in caplog.records) == 1
    counter.count("more text")
    assert sum("unavailable" in r.getMessage() for r in caplog.records) == 1
