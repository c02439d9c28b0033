"""Waiting for a condition in tests: poll with a deadline, never a fixed sleep."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def until(predicate: Callable[[], bool], timeout: float = 10.0, step: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(step)


def polled(fetch: Callable[[], T], done: Callable[[T], bool], timeout: float = 10.0) -> T:
    """Fetches until `done` holds of the value, and returns the last one (the caller's
    assertion then says what it was when it never did)."""
    deadline = time.monotonic() + timeout
    while True:
        value = fetch()
        if done(value) or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


async def eventually(predicate: Callable[[], bool], seconds: float = 10.0) -> None:
    """`until` for async tests: polls without blocking the event loop the code under test
    runs on."""
    import asyncio

    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)
