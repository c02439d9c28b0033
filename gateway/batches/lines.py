"""A job's input, read the way the vendors read it: an OpenAI JSONL file (each line `custom_id`,
`method`, `url`, `body`) or an Anthropic list of `{custom_id, params}`.

What is wrong with the file as a whole (a line that is not JSON, a missing field, a line for
another endpoint, a `custom_id` used twice, too many lines) fails the whole job at validation,
with every problem listed by line, as OpenAI's `errors` does; what is wrong with one request
(an unknown model, a bad parameter) is that line's error when it runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from gateway.call import Endpoint

# The endpoints a batch line may name, as OpenAI spells them.
URLS: dict[str, Endpoint] = {
    "/v1/chat/completions": "chat.completions",
    "/v1/completions": "completions",
    "/v1/embeddings": "embeddings",
    "/v1/responses": "responses",
}
_MAX_ERRORS = 100


@dataclass(frozen=True, slots=True)
class Request:
    custom_id: str
    body: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Problem:
    code: str
    message: str
    line: int | None = None
    param: str | None = None

    def public(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "param": self.param,
                "line": self.line}  # fmt: skip


def openai_lines(content: bytes, url: str, max_lines: int) -> tuple[list[Request], list[Problem]]:
    """The file's requests, or what makes it unusable (line numbers from 1)."""
    requests: list[Request] = []
    problems: list[Problem] = []
    seen: set[str] = set()
    rows = [r for r in content.splitlines() if r.strip()]
    if len(rows) > max_lines:
        why = f"The file has {len(rows)} requests; a batch may hold {max_lines}."
        return [], [Problem("too_many_requests", why)]
    if not rows:
        return [], [Problem("empty_file", "The input file has no requests.")]
    for number, raw in enumerate(rows, start=1):
        problem = _line(raw, number, url, seen, requests)
        if problem is not None:
            problems.append(problem)
            if len(problems) >= _MAX_ERRORS:
                break
    return requests, problems


def _line(
    raw: bytes, number: int, url: str, seen: set[str], requests: list[Request]
) -> Problem | None:
    try:
        item = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return Problem("invalid_json_line", "This line is not parseable as valid JSON.", number)
    if not isinstance(item, dict):
        return Problem("invalid_json_line", "This line is not a JSON object.", number)
    for name in ("custom_id", "method", "url", "body"):
        if name not in item:
            return Problem("missing_required_parameter",
                           f"Missing required parameter: '{name}'.", number, name)  # fmt: skip
    custom_id, body = item["custom_id"], item["body"]
    if not isinstance(custom_id, str) or not custom_id or len(custom_id) > 200:
        return Problem("invalid_custom_id", "custom_id must be a string of 1 to 200 characters.",
                       number, "custom_id")  # fmt: skip
    if item["method"] != "POST":
        return Problem("invalid_method", "method must be POST.", number, "method")
    if item["url"] != url:
        return Problem("mismatched_endpoint",
                       f"The request's url {item['url']!r} does not match the batch's endpoint "
                       f"{url!r}.", number, "url")  # fmt: skip
    if not isinstance(body, dict) or not isinstance(body.get("model"), str):
        return Problem("invalid_body", "body must be an object with a 'model'.", number, "body")
    if custom_id in seen:
        return Problem("duplicate_custom_id",
                       f"The custom_id {custom_id!r} is used by another request.", number,
                       "custom_id")  # fmt: skip
    seen.add(custom_id)
    requests.append(Request(custom_id, _unstreamed(body)))
    return None


def anthropic_requests(raw: Any, max_lines: int) -> tuple[list[Request], list[Problem]]:
    """An Anthropic `requests` array; Anthropic refuses a bad one whole, as a 400."""
    if not isinstance(raw, list) or not raw:
        return [], [Problem("invalid_request", "requests: must be a non-empty array.",
                            param="requests")]  # fmt: skip
    if len(raw) > max_lines:
        return [], [Problem("invalid_request",
                            f"requests: at most {max_lines} requests per batch.",
                            param="requests")]  # fmt: skip
    requests: list[Request] = []
    seen: set[str] = set()
    for i, item in enumerate(raw):
        where = f"requests.{i}"
        if not isinstance(item, dict) or not isinstance(item.get("custom_id"), str):
            return [], [Problem("invalid_request", f"{where}.custom_id: Field required",
                                param=f"{where}.custom_id")]  # fmt: skip
        params = item.get("params")
        if not isinstance(params, dict) or not isinstance(params.get("model"), str):
            return [], [Problem("invalid_request", f"{where}.params: must be an object with "
                                "a 'model'", param=f"{where}.params")]  # fmt: skip
        if item["custom_id"] in seen:
            return [], [Problem("invalid_request",
                                f"{where}.custom_id: duplicate custom_id {item['custom_id']!r}",
                                param=f"{where}.custom_id")]  # fmt: skip
        seen.add(item["custom_id"])
        requests.append(Request(item["custom_id"], _unstreamed(params)))
    return requests, []


def _unstreamed(body: dict[str, Any]) -> dict[str, Any]:
    """A batch line never streams (its answer is written, not relayed)."""
    return {k: v for k, v in body.items() if k not in ("stream", "stream_options")}
