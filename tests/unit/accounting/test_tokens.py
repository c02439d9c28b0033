from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.accounting.tokens import TokenCounter, shipped_ranks


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
        "from gateway.accounting.tokens import TokenCounter, shipped_ranks\n"
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


# Token ids tiktoken's own registry encoding gives (cl100k_base, tiktoken 0.14).
GOLDEN = {
    "hello world": [15339, 1917],
    "Tollgate's lean encoding: ünïcode, <|endoftext|>, code `x = 1` and 12345 numbers.": [
        51, 980, 25623, 596, 16025, 11418, 25, 10709, 77, 38672, 1889, 11, 83739, 8862, 728,
        428, 91, 8226, 2082, 1595, 87, 284, 220, 16, 63, 323, 220, 4513, 1774, 5219, 13,
    ],
    "  leading\n\n\ttabs\r\nCRLF": [220, 6522, 271, 3324, 3518, 319, 34, 81758],
    "日本語のテキストと emoji 🎉🚀": [
        9080, 22656, 45918, 252, 16144, 57933, 62903, 71634, 19732, 43465, 11410, 236, 231,
        9468, 248, 222,
    ],
    "def f(x):\n    return x**2  # comment": [
        755, 282, 2120, 997, 262, 471, 865, 334, 17, 220, 674, 4068,
    ],
}  # fmt: skip


@pytest.mark.parametrize("text", list(GOLDEN))
def test_the_shipped_encoding_gives_tiktokens_token_ids(tokens: TokenCounter, text: str) -> None:
    assert tokens.encode(text) == GOLDEN[text]


def test_the_shipped_file_is_tiktokens_published_cl100k_base() -> None:
    ranks = shipped_ranks()
    assert len(ranks) == 100256
    assert ranks[b"hello"] == 15339 and ranks[b" world"] == 1917


def test_counts_exactly_offline_in_a_fresh_process_with_no_tiktoken_cache(tmp_path: Path) -> None:
    """A fresh install: no TIKTOKEN_CACHE_DIR, an empty default cache, no network."""
    script = (
        "import socket\n"
        "def refuse(*a, **k): raise OSError('no network in this test')\n"
        "socket.socket.connect = refuse\n"
        "socket.create_connection = refuse\n"
        "from gateway.accounting.tokens import TokenCounter, shipped_ranks\n"
        "counter = TokenCounter()\n"
        "print(counter.exact, counter.count('hello world'))\n"
    )
    env = {
        k: v for k, v in os.environ.items() if k not in ("TIKTOKEN_CACHE_DIR", "DATA_GYM_CACHE_DIR")
    }
    env["TMPDIR"] = str(tmp_path)  # tiktoken's default cache lives under the temp dir: empty
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "2"]
    assert not list(tmp_path.iterdir())  # nothing was fetched or cached


def test_the_warning_for_an_unavailable_encoding_says_how_to_fix_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="gateway.tokens"):
        TokenCounter("no_such_encoding")
    (message,) = [r.getMessage() for r in caplog.records]
    assert "TIKTOKEN_CACHE_DIR" in message and "estimated" in message
