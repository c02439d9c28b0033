"""A small closed-loop load generator that remembers which requests got whole responses."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable

import httpx
import orjson


def prompt_of(n: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"request {n}"}]


def prompt_hash(n: int) -> str:
    """What the audit event's prompt_sha256 is for request n."""
    prompt = {"messages": prompt_of(n)}
    return hashlib.sha256(orjson.dumps(prompt, option=orjson.OPT_SORT_KEYS)).hexdigest()


class Load:
    """`workers` threads, each sending one request at a time to `url()` until stopped."""

    def __init__(self, url: Callable[[], str], workers: int = 8, model: str = "chat") -> None:
        self._url = url
        self._model = model
        self._lock = threading.Lock()
        self._next = 0
        self.received: set[int] = set()
        self.failed: set[int] = set()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._work, daemon=True) for _ in range(workers)]

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(30)

    def _work(self) -> None:
        with httpx.Client(timeout=10) as client:
            while not self._stop.is_set():
                with self._lock:
                    n = self._next
                    self._next += 1
                body = {"model": self._model, "messages": prompt_of(n), "max_tokens": 4}
                try:
                    response = client.post(self._url() + "/v1/chat/completions", json=body)
                    ok = response.status_code == 200 and response.json()["object"]
                except (httpx.HTTPError, ValueError, KeyError):
                    ok = False
                with self._lock:
                    (self.received if ok else self.failed).add(n)

    def count(self) -> int:
        with self._lock:
            return len(self.received)
