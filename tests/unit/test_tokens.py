from __future__ import annotations

import logging
import subprocess
import sys

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


def test_the_encoding_keeps_no_python_copy_of_its_vocabulary() -> None:
    """tiktoken's Encoding holds its 100k merge ranks twice (a Python dict, ~16 MB, and the Rust
    core's tables); only the Rust core is needed to count. Measured in a fresh interpreter, where
    nothing is cached yet: what stays allocated in Python after loading must be small."""
    script = (
        "import gc, tracemalloc\n"
        "tracemalloc.start()\n"
        "from gateway.accounting.tokens import TokenCounter\n"
        "counter = TokenCounter()\n"
        "gc.collect()\n"
        "assert counter.exact and counter.count('hello world') == 2\n"
        "print(tracemalloc.get_traced_memory()[0])\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    retained_mb = int(out.stdout) / 2**20
    assert retained_mb < 6, f"{retained_mb:.1f} MB of Python objects kept by the tokenizer"


def test_the_lean_encoding_counts_exactly_as_tiktoken_does(tokens: TokenCounter) -> None:
    import tiktoken

    official = tiktoken.get_encoding("cl100k_base")
    text = "Tollgate's lean encoding: ünïcode, <|endoftext|>, code `x = 1` and 12345 numbers."
    assert tokens.encode(text) == official.encode(text, disallowed_special=())
