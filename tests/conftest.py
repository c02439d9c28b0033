"""Shared fixtures. Every test builds what it uses (ports, files, processes) and removes it."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tokens():  # type: ignore[no-untyped-def]
    from gateway.accounting.tokens import TokenCounter

    counter = TokenCounter()
    assert counter.exact, "cl100k_base ships with the package: is the install damaged?"
    return counter
