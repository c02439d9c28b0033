"""Embedding coalescing: concurrent small embedding calls to one backend and model, merged into
one upstream call and split back, each caller billed for its own inputs.

A call that finds no other embedding call to the same model in flight goes at once (a lone
call waits for nothing); calls that arrive while one is in flight gather for `window_s` (or
until `max_inputs`) and go as one. A merged call the upstream refuses is retried per caller,
so one caller's bad input fails only that caller.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import orjson

from gateway.accounting.tokens import TokenCounter
from gateway.backends.base import UpstreamRequest, UpstreamResponse
from gateway.call import Usage

Send = Callable[[UpstreamRequest], Awaitable[UpstreamResponse]]
T = TypeVar("T")
_JSON = (("content-type", "application/json"),)


@dataclass
class _Member:
    request: UpstreamRequest
    inputs: list[str]
    done: asyncio.Future[UpstreamResponse]


@dataclass
class _Group:
    members: list[_Member] = field(default_factory=list)
    size: int = 0
    timer: asyncio.TimerHandle | None = None


class Coalescer:
    def __init__(self, send: Send, tokens: TokenCounter, window_s: float, max_inputs: int) -> None:
        self._send = send
        self._tokens = tokens
        self._window_s = window_s
        self._max_inputs = max_inputs
        self._groups: dict[str, _Group] = {}
        self._in_flight: dict[str, int] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.merged = 0  # upstream calls that carried more than one caller's inputs

    async def send(self, request: UpstreamRequest) -> UpstreamResponse:
        inputs = _texts(request.body.get("input"))
        if inputs is None or len(inputs) >= self._max_inputs:
            return await self._send(request)
        key = _group_key(request)
        if not self._in_flight.get(key) and key not in self._groups:
            return await self._counted(key, self._send(request))
        group = self._groups.get(key)
        if group is None:
            group = self._groups[key] = _Group()
            loop = asyncio.get_running_loop()
            group.timer = loop.call_later(self._window_s, self._start, key)
        member = _Member(request, inputs, asyncio.get_running_loop().create_future())
        group.members.append(member)
        group.size += len(inputs)
        if group.size >= self._max_inputs:
            self._start(key)
        return await member.done

    async def _counted(self, key: str, call: Awaitable[T]) -> T:
        self._in_flight[key] = self._in_flight.get(key, 0) + 1
        try:
            return await call
        finally:
            self._in_flight[key] -= 1
            if not self._in_flight[key]:
                del self._in_flight[key]

    def _start(self, key: str) -> None:
        group = self._groups.pop(key, None)
        if group is None:
            return
        if group.timer is not None:
            group.timer.cancel()
        task = asyncio.get_running_loop().create_task(self._counted(key, self._flush(group)))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _flush(self, group: _Group) -> None:
        members = [m for m in group.members if not m.done.done()]  # callers still waiting
        if len(members) <= 1:
            if members:
                await _settle(members[0], self._send(members[0].request))
            return
        first = members[0].request
        body = {**first.body, "input": [t for m in members for t in m.inputs]}
        try:
            response = await self._send(replace(first, body=body))
        except Exception as exc:  # noqa: BLE001 - handed to every waiting caller
            for m in members:
                if not m.done.done():
                    m.done.set_exception(exc)
            return
        if response.status >= 400:  # one caller's input may be the problem: each on its own
            await asyncio.gather(*(_settle(m, self._send(m.request)) for m in members))
            return
        self.merged += 1
        for member, part in zip(members, self._split(response, members), strict=True):
            if not member.done.done():
                member.done.set_result(part)

    def _split(self, response: UpstreamResponse, members: list[_Member]) -> list[UpstreamResponse]:
        payload = orjson.loads(response.body)
        data = sorted(payload.get("data") or (), key=lambda d: d.get("index", 0))
        counts = [sum(self._tokens.count(t) for t in m.inputs) for m in members]
        reported = response.usage.input_tokens if response.usage is not None else None
        shares = _shares(reported, counts)
        out, at = [], 0
        for member, share in zip(members, shares, strict=True):
            own = [{**d, "index": j} for j, d in enumerate(data[at : at + len(member.inputs)])]
            at += len(member.inputs)
            body: dict[str, Any] = {
                "object": "list", "data": own, "model": payload.get("model"),
                "usage": {"prompt_tokens": share, "total_tokens": share},
            }  # fmt: skip
            usage = Usage(share, 0, estimated=reported is None)
            out.append(UpstreamResponse(200, _JSON, orjson.dumps(body), usage, meta=response.meta))
        return out


async def _settle(member: _Member, call: Awaitable[UpstreamResponse]) -> None:
    try:
        result = await call
    except Exception as exc:  # noqa: BLE001 - handed to the waiting caller
        if not member.done.done():
            member.done.set_exception(exc)
        return
    if not member.done.done():
        member.done.set_result(result)


def _shares(total: int | None, counts: list[int]) -> list[int]:
    """The upstream's total split by each caller's own count (largest remainder: the parts add
    up to the total exactly); each caller's own count when the upstream gave none."""
    if total is None:
        return counts
    whole = sum(counts) or len(counts)
    weights = counts if sum(counts) else [1] * len(counts)
    exact = [total * w / whole for w in weights]
    parts = [int(x) for x in exact]
    for i in sorted(range(len(parts)), key=lambda i: exact[i] - parts[i], reverse=True):
        if sum(parts) >= total:
            break
        parts[i] += 1
    return parts


def _texts(raw: Any) -> list[str] | None:
    """Text inputs only (a string or a list of strings); token arrays go on their own."""
    if isinstance(raw, str):
        return [raw]
    if isinstance(raw, list) and raw and all(isinstance(t, str) for t in raw):
        return list(raw)
    return None


def _group_key(request: UpstreamRequest) -> str:
    """Calls merge only with calls that ask the same of the same model (dimensions, format)."""
    rest = {k: v for k, v in request.body.items() if k != "input"}
    with contextlib.suppress(TypeError):
        return request.model + "\x1f" + orjson.dumps(rest, option=orjson.OPT_SORT_KEYS).decode()
    return request.model + "\x1f" + repr(sorted(rest.items()))
