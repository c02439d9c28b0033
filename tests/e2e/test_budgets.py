"""Budgets through real gateway processes sharing one real Redis: exact under concurrency,
across processes, for streams and for streams the client abandons."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from gateway.accounting.tokens import TokenCounter
from tests.support.fake_upstream import FakeUpstream
from tests.support.servers import GatewayProcess
from tests.support.services import REDIS_URL, redis_prefix, seed_elsewhere
from tests.support.wait import polled

ADMIN = "admin-secret-for-tests"
KEY = "tg-budget-test-key"
MESSAGES = [{"role": "user", "content": "hi"}]
MAX_TOKENS = 100


def config(
    upstream: str, prefix: str, budget_usd: Decimal, store: str = "redis", redis: str = REDIS_URL
) -> str:
    cluster = redis != REDIS_URL
    return f"""
version: 1
server: {{reload_poll_seconds: 0}}
logging: {{requests: false}}
auth:
  keys:
    - {{name: alice, key_env: TG_ALICE, team: ml}}
backends:
  fake: {{type: openai, base_url: "{upstream}/v1"}}
models:
  metered: {{backend: fake, model: metered}}
  chat: {{backend: fake, model: fake-chat}}
  endless: {{backend: fake, model: endless}}
pricing:
  - {{backend: fake, input: 1, output: 2}}
limits:
  store: {store}
  redis_url: {redis}
  redis_cluster: {str(cluster).lower()}
  key_prefix: {prefix}
  prompt_margin: 0
  budgets:
    - {{name: ml-daily, scope: team, subject: ml, usd: "{budget_usd}", window: day}}
"""


ENV = {"TG_ALICE": KEY, "TOLLGATE_ADMIN_KEY": ADMIN}


def per_call_nanos(tokens: TokenCounter) -> int:
    prompt = tokens.count_messages(MESSAGES)
    return prompt * 1000 + MAX_TOKENS * 2000


@contextlib.contextmanager
def gateways(n: int, text: str, tmp_path: Path) -> Iterator[list[GatewayProcess]]:
    path = tmp_path / "tollgate.yaml"
    path.write_text(text)
    with contextlib.ExitStack() as stack:
        procs = [
            stack.enter_context(GatewayProcess(path, env=ENV, log=tmp_path / f"gw{i}.log"))
            for i in range(n)
        ]
        yield procs


async def storm(urls: list[str], count: int) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=count + 10, max_keepalive_connections=count + 10)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:
        body = {"model": "metered", "messages": MESSAGES, "max_tokens": MAX_TOKENS}
        headers = {"authorization": f"Bearer {KEY}"}
        return await asyncio.gather(
            *(
                client.post(
                    f"{urls[i % len(urls)]}/v1/chat/completions", json=body, headers=headers
                )
                for i in range(count)
            )
        )


def admin(url: str, path: str) -> Any:
    response = httpx.get(url + path, headers={"authorization": f"Bearer {ADMIN}"}, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


@pytest.mark.parametrize(
    ("processes", "store"),
    [(1, "redis"), (3, "redis"), (1, "memory"), (3, "redis-cluster")],
)
def test_concurrent_storm_never_passes_the_budget(
    processes: int,
    store: str,
    upstream: tuple[FakeUpstream, str],
    tmp_path: Path,
    tokens: TokenCounter,
    request: pytest.FixtureRequest,
) -> None:
    cost = per_call_nanos(tokens)
    fits = 50
    budget = Decimal(cost * fits + cost // 2) / 10**9  # room for 50.5 calls
    nodes = request.getfixturevalue("cluster") if store == "redis-cluster" else []
    seed = nodes[0].url if nodes else REDIS_URL
    with redis_prefix(seed) as prefix:
        # On the cluster, reached through a node that does not own the counters' slot.
        url = seed_elsewhere(nodes, "{" + prefix + "}") if nodes else REDIS_URL
        text = config(upstream[1], prefix, budget, store.removesuffix("-cluster"), url)
        with gateways(processes, text, tmp_path) as gws:
            storm_the_budget(gws, cost, fits, budget)


def storm_the_budget(gws: list[GatewayProcess], cost: int, fits: int, budget: Decimal) -> None:
    """Races 300 calls at a budget with room for 50.5 across the gateways."""
    responses = asyncio.run(storm([gw.url for gw in gws], 300))
    statuses = [r.status_code for r in responses]
    served = statuses.count(200)
    denied = [r for r in responses if r.status_code == 429]
    assert served + len(denied) == 300, sorted(set(statuses))
    # Cold, each target's template overhead is the prior: fewer may fit, never more.
    assert 0 < served <= fits, f"{served} served"
    error = denied[0].json()["error"]
    assert error["type"] == "insufficient_quota" and "ml-daily" in error["message"]
    assert denied[0].headers["x-should-retry"] == "false"
    # Once every gateway has learnt the overhead (none here), the budget fills exactly.
    for gw in gws:
        while asyncio.run(storm([gw.url], 1))[0].status_code == 200:
            served += 1
    assert served == fits, f"{served} served; exactly the excess must be denied"
    spend = polled(  # other processes ship their spend tallies within a second
        lambda: admin(gws[0].url, "/admin/spend?group_by=team&window=day"),
        lambda s: s["total"]["requests"] == served,
    )
    committed = Decimal(spend["total"]["usd"])
    assert committed == Decimal(cost * served) / 10**9
    assert committed <= budget
    budget_state = admin(gws[-1].url, "/admin/budgets/ml-daily")
    assert Decimal(budget_state["usage"]["usd"]) == committed, "no reservation left behind"


def test_streams_and_abandoned_streams_are_charged(
    upstream: tuple[FakeUpstream, str], tmp_path: Path
) -> None:
    with (
        redis_prefix() as prefix,
        gateways(1, config(upstream[1], prefix, Decimal(1)), tmp_path) as (gw,),
    ):
        client = openai.OpenAI(base_url=gw.url + "/v1", api_key=KEY, max_retries=0)
        stream = client.chat.completions.create(model="chat", messages=MESSAGES, stream=True)  # type: ignore[arg-type]
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        after_stream = Decimal(admin(gw.url, "/admin/spend?group_by=model")["total"]["usd"])
        assert after_stream == Decimal(11 * 1000 + 5 * 2000) / 10**9, "reported usage of the stream"

        abandoned = client.chat.completions.create(
            model="endless",
            messages=MESSAGES,
            stream=True,
            max_tokens=1000,  # type: ignore[arg-type]
        )
        for i, _ in enumerate(abandoned):
            if i == 5:
                break
        abandoned.close()
        spend = polled(
            lambda: admin(gw.url, "/admin/spend?group_by=model"), lambda s: len(s["rows"]) == 2
        )
        endless = next(r for r in spend["rows"] if r["model"] == "endless")
        assert 0 < endless["output_tokens"] < 1000, "charged for what was generated, not the cap"
        usage = admin(gw.url, "/admin/budgets/ml-daily")["usage"]
        assert Decimal(usage["usd"]) == Decimal(spend["total"]["usd"]), "reservation released"


def test_reservations_of_a_killed_gateway_are_released_by_another(
    upstream: tuple[FakeUpstream, str], tmp_path: Path
) -> None:
    import threading

    with redis_prefix() as prefix:
        slow_model = "  slow: {backend: fake, model: slow}\n"
        text = (
            config(upstream[1], prefix, Decimal(1))
            .replace("  prompt_margin: 0\n", "  prompt_margin: 0\n  hold_seconds: 2\n")
            .replace("  endless:", slow_model + "  endless:")
        )
        with gateways(2, text, tmp_path) as (doomed, survivor):

            def slow_call() -> None:
                with contextlib.suppress(httpx.HTTPError):
                    httpx.post(
                        doomed.url + "/v1/chat/completions",
                        json={"model": "slow", "messages": MESSAGES, "max_tokens": 50},
                        headers={"authorization": f"Bearer {KEY}"},
                        timeout=10,
                    )

            caller = threading.Thread(target=slow_call)
            caller.start()
            used = polled(
                lambda: admin(survivor.url, "/admin/budgets/ml-daily")["usage"]["usd"],
                lambda usd: Decimal(usd) > 0,
            )
            assert Decimal(used) > 0, "the slow call's reservation is held"
            assert doomed.proc is not None
            doomed.proc.kill()  # kill -9: the call will never settle
            doomed.proc.wait(5)
            caller.join(10)
            released = polled(
                lambda: admin(survivor.url, "/admin/budgets/ml-daily")["usage"]["usd"],
                lambda usd: Decimal(usd) == 0,
                timeout=15,
            )
            assert Decimal(released) == 0, "the survivor released the dead gateway's hold"


def test_a_budget_refusing_calls_with_money_left_says_so(
    upstream: tuple[FakeUpstream, str], tmp_path: Path, tokens: TokenCounter
) -> None:
    """$0.00005 left, a call that may cost far more: refused, with what is left and what it
    needed, and the dashboard's data counts the budget's refusals."""
    budget = Decimal("0.00005")
    with (
        redis_prefix() as prefix,
        gateways(1, config(upstream[1], prefix, budget), tmp_path) as (gw,),
    ):
        body = {"model": "metered", "messages": MESSAGES, "max_tokens": 5000}
        r = httpx.post(
            gw.url + "/v1/chat/completions", json=body, headers={"authorization": f"Bearer {KEY}"}
        )
        assert r.status_code == 429 and r.headers["x-should-retry"] == "false"
        message = r.json()["error"]["message"]
        assert message.startswith("Budget too low for this call") and "$0.000050 left" in message
        summary = admin(gw.url, "/dashboard/api/summary?range=1h")
        (row,) = [b for b in summary["budgets"] if b["name"] == "ml-daily"]
        assert row["refused"] == 1 and row["spent_usd"] < row["limit_usd"]


def test_both_sdks_read_what_is_left_and_what_a_call_cost(
    upstream: tuple[FakeUpstream, str], tmp_path: Path, tokens: TokenCounter
) -> None:
    """Budget headers from counters on Redis, through served processes and the official SDKs
    (the Anthropic one too, translated onto an OpenAI-compatible upstream)."""
    import anthropic

    with (
        redis_prefix() as prefix,
        gateways(1, config(upstream[1], prefix, Decimal(1)), tmp_path) as (gw,),
    ):
        client = openai.OpenAI(base_url=gw.url + "/v1", api_key=KEY, max_retries=0)
        raw = client.chat.completions.with_raw_response.create(
            model="chat",
            messages=MESSAGES,
            max_tokens=MAX_TOKENS,  # type: ignore[arg-type]
        )
        cost = Decimal(raw.headers["x-tollgate-cost-usd"])
        assert cost > 0 and raw.parse().choices
        assert Decimal(raw.headers["x-tollgate-budget-remaining-usd"]) <= 1 - cost
        claude = anthropic.Anthropic(base_url=gw.url, api_key=KEY, max_retries=0)
        reply = claude.messages.with_raw_response.create(
            model="chat",
            max_tokens=MAX_TOKENS,
            messages=MESSAGES,  # type: ignore[arg-type]
        )
        assert Decimal(reply.headers["x-tollgate-cost-usd"]) > 0
        assert Decimal(reply.headers["x-tollgate-budget-remaining-usd"]) < 1 - cost
        with claude.messages.stream(model="chat", max_tokens=5, messages=MESSAGES) as stream:  # type: ignore[arg-type]
            assert "".join(stream.text_stream)  # the cost comment is invisible to the SDK
        client.close()
        claude.close()
