"""What a fleet's orchestrator reads off a gateway and writes to it: the saturation series the
autoscaler scales on (calls in flight, streams until their last byte; event-loop lag), and a
config mounted from a Kubernetes ConfigMap, which the kubelet updates by swapping a symlink,
reloaded without a restart."""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path

import httpx

from gateway.api.load import IN_FLIGHT, LOOP_LAG
from tests.e2e.conftest import KEY
from tests.support.servers import GatewayProcess
from tests.support.wait import polled


def gauge(gw: GatewayProcess, name: str) -> float | None:
    text = httpx.get(gw.url + "/metrics", timeout=5).text
    found = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else None


def test_calls_in_flight_count_streams_until_their_last_byte(gateway_proc: GatewayProcess) -> None:
    assert gauge(gateway_proc, IN_FLIGHT) == 0
    lag = gauge(gateway_proc, LOOP_LAG)
    assert lag is not None and 0 <= lag < 1
    body = {"model": "endless", "stream": True, "messages": [{"role": "user", "content": "go"}]}
    headers = {"authorization": f"Bearer {KEY}"}
    with (
        httpx.Client(base_url=gateway_proc.url, timeout=10) as client,
        contextlib.ExitStack() as streams,
    ):
        for _ in range(3):
            response = streams.enter_context(
                client.stream("POST", "/v1/chat/completions", json=body, headers=headers)
            )
            assert response.status_code == 200
            next(response.iter_raw())  # the stream is flowing
        # The scrape is not a proxied call: exactly the three streams.
        assert gauge(gateway_proc, IN_FLIGHT) == 3
    assert polled(lambda: gauge(gateway_proc, IN_FLIGHT), lambda v: v == 0) == 0


CONFIG = """
version: 1
server: {{reload_poll_seconds: 0.05}}
auth: {{keys: [{{name: app, key_env: TG_KEY}}]}}
backends:
  gpu: {{type: sim, time_scale: 0, models: [{{name: m, default_max_tokens: 4}}]}}
models:
{models}
"""


def publish(root: Path, files: dict[str, str]) -> None:
    """Updates `root` the way the kubelet updates a mounted ConfigMap: the files go into a new
    timestamped directory, the `..data` link is swapped to it by an atomic rename, and each
    file is a symlink through `..data` (so the new contents appear at once, and only then)."""
    stamp = root / f"..2026_12_01_00_00_{len(list(root.glob('..2026_*'))):02d}.000000000"
    stamp.mkdir()
    for name, text in files.items():
        (stamp / name).write_text(text)
    old = (root / "..data").resolve() if (root / "..data").exists() else None
    (root / "..data_tmp").symlink_to(stamp.name)
    os.rename(root / "..data_tmp", root / "..data")
    for name in files:
        if not (root / name).is_symlink():
            (root / name).symlink_to(f"..data/{name}")
    if old is not None:
        for child in old.iterdir():
            child.unlink()
        old.rmdir()


def test_a_config_map_update_is_reloaded_without_a_restart(tmp_path: Path) -> None:
    publish(tmp_path, {"tollgate.yaml": CONFIG.format(models="  chat: {backend: gpu, model: m}")})
    with GatewayProcess(tmp_path / "tollgate.yaml", env={"TG_KEY": "k"}) as gw:
        headers = {"authorization": "Bearer k"}

        def models() -> set[str]:
            listed = httpx.get(gw.url + "/v1/models", headers=headers).json()["data"]
            return {m["id"] for m in listed}

        assert models() == {"chat"}
        edited = "  chat: {backend: gpu, model: m}\n  chat-v2: {backend: gpu, model: m}"
        publish(tmp_path, {"tollgate.yaml": CONFIG.format(models=edited)})
        assert polled(models, lambda ids: "chat-v2" in ids) == {"chat", "chat-v2"}


def test_probes_open_no_database_connection(tmp_path: Path) -> None:
    """Kubernetes probes every few seconds per pod: /readyz and /healthz answer from what the
    process already holds, so a fleet's probes never add PostgreSQL connections."""
    from sqlalchemy import create_engine, text

    from tests.support.services import PG_ADMIN_URL, postgres_database

    config = tmp_path / "tollgate.yaml"
    # Nothing else in the background that uses the database while the probes run: no audit
    # worker, no key refresh within the test (what the probes do is the question here).
    quiet = (
        "database: {auto_upgrade: true}\naudit: {enabled: false}\nkeys: {refresh_seconds: 3600}\n"
    )
    config.write_text(CONFIG.format(models="  chat: {backend: gpu, model: m}") + quiet)
    admin = create_engine(PG_ADMIN_URL)

    def backends(database: str) -> set[int]:
        with admin.connect() as conn:
            query = text("SELECT pid FROM pg_stat_activity WHERE datname = :d")
            return {int(pid) for (pid,) in conn.execute(query, {"d": database})}

    try:
        with postgres_database() as url:
            env = {"TG_KEY": "k", "TOLLGATE_DATABASE_URL": url}
            with GatewayProcess(config, env=env) as gw:
                database = url.rsplit("/", 1)[1]
                before = backends(database)
                assert before, "the gateway holds its pooled connections"
                for _ in range(50):
                    assert httpx.get(gw.url + "/readyz").status_code == 200
                    assert httpx.get(gw.url + "/healthz").status_code == 200
                assert backends(database) <= before
    finally:
        admin.dispose()
