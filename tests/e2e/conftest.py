from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.fake_upstream import FakeUpstream
from tests.support.servers import GatewayProcess, ThreadServer, free_port

KEY = "tg-test-key-0123456789"
NARROW_KEY = "tg-narrow-key-0123456789"


@pytest.fixture(scope="module")
def upstream() -> Iterator[tuple[FakeUpstream, str]]:
    fake = FakeUpstream()
    with ThreadServer(fake.app) as server:
        yield fake, server.url


def gateway_config(upstream_url: str) -> str:
    dead = free_port()  # nothing listens here
    return f"""
version: 1
server:
  max_body_bytes: 4096
  reload_poll_seconds: 0
auth:
  keys:
    - name: tester
      key_env: TG_TEST_KEY
      team: qa
    - name: narrow
      key_env: TG_NARROW_KEY
      models: [chat]
backends:
  fake:
    type: openai
    base_url: {upstream_url}/v1
    api_key_env: TG_UPSTREAM_KEY
  fake-slow:
    type: openai
    base_url: {upstream_url}/v1
    timeouts: {{connect: 1, read: 0.5, total: 5}}
  down:
    type: openai
    base_url: http://127.0.0.1:{dead}/v1
    timeouts: {{connect: 1, read: 1, total: 2}}
models:
  chat:
    {{backend: fake, model: fake-chat}}
  nousage:
    {{backend: fake, model: no-usage}}
  slow:
    {{backend: fake-slow, model: slow}}
  slowlong:
    {{backend: fake, model: slow}}
  endless:
    {{backend: fake, model: endless}}
  limited:
    {{backend: fake, model: rate-limited}}
  down:
    {{backend: down, model: whatever}}
  emb:
    {{backend: fake, model: fake-embed}}
pricing:
  - {{backend: fake, model: fake-chat, input: 1.0, output: 2.0}}
  - {{free: true}}
policies:
  - use: max_tokens
    with: {{limit: 2000, teams: {{qa: 1000}}}}
"""


GATEWAY_ENV = {
    "TG_TEST_KEY": KEY,
    "TG_NARROW_KEY": NARROW_KEY,
    "TG_UPSTREAM_KEY": "sk-upstream-secret",
}


@pytest.fixture(scope="module")
def gateway_proc(
    upstream: tuple[FakeUpstream, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    tmp: Path = tmp_path_factory.mktemp("gw")
    config = tmp / "tollgate.yaml"
    config.write_text(gateway_config(upstream[1]))
    proc = GatewayProcess(config, env=GATEWAY_ENV, log=tmp / "gateway.log")
    with proc:
        yield proc
