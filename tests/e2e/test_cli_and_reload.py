"""The CLI as ops use it: config check, refusing bad configs, hot reload."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import openai
import pytest

from tests.e2e.conftest import GATEWAY_ENV, KEY, gateway_config
from tests.support.fake_upstream import FakeUpstream
from tests.support.servers import GatewayProcess, free_port
from tests.support.wait import until


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**GATEWAY_ENV, "PATH": ""} | _base_env(),
    )


def _base_env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if k not in GATEWAY_ENV}


def test_config_check_ok_and_broken(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(gateway_config("http://127.0.0.1:9"))
    result = run_cli("config", "check", str(good))
    assert result.returncode == 0, result.stderr
    assert "OK" in result.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        gateway_config("http://127.0.0.1:9").replace("max_body_bytes: 4096", "max_body_bytes: lots")
    )
    result = run_cli("config", "check", str(bad))
    assert result.returncode == 2
    assert f"{bad}:4:19: server.max_body_bytes: Input should be a valid integer" in result.stderr


def test_config_check_and_admin_commands_without_the_secrets(tmp_path: Path) -> None:
    """Ops validate a config (and admins manage keys) on a machine that does not hold every
    client and upstream secret the config names."""
    config = tmp_path / "tollgate.yaml"
    config.write_text(gateway_config("http://127.0.0.1:9"))
    bare = {**_base_env(), "PATH": "", "TOLLGATE_DATABASE_URL": f"sqlite:///{tmp_path}/t.db"}
    strict = subprocess.run(
        [sys.executable, "-m", "gateway", "config", "check", str(config)],
        capture_output=True, text=True, timeout=60, env=bare,
    )  # fmt: skip
    assert strict.returncode == 2 and "TG_TEST_KEY is not set" in strict.stderr
    relaxed = subprocess.run(
        [sys.executable, "-m", "gateway", "config", "check", "--no-env", str(config)],
        capture_output=True, text=True, timeout=60, env=bare,
    )  # fmt: skip
    assert relaxed.returncode == 0, relaxed.stderr
    listed = subprocess.run(
        [sys.executable, "-m", "gateway", "keys", "list", "--config", str(config)],
        capture_output=True, text=True, timeout=60, env=bare,
    )  # fmt: skip
    assert listed.returncode == 0, listed.stderr


def test_serve_refuses_an_invalid_config_with_status_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nmodels:\n  chat:\n    backend: ghost\n    model: m\n")
    result = run_cli("serve", "--config", str(bad), "--port", str(free_port()))
    assert result.returncode == 2
    assert f"{bad}:4:14: models.chat.backend: unknown backend 'ghost'" in result.stderr


def test_open_mode_refuses_a_public_bind() -> None:
    result = run_cli("serve", "--host", "0.0.0.0", "--port", str(free_port()))
    assert result.returncode == 2
    assert "only binds to loopback" in result.stderr


def chat(gw: GatewayProcess, model: str) -> str | None:
    c = openai.OpenAI(base_url=gw.url + "/v1", api_key=KEY, max_retries=0)
    reply = c.chat.completions.create(model=model, messages=[{"role": "user", "content": "x"}])
    return reply.choices[0].message.content


def generation(gw: GatewayProcess) -> int:
    return int(httpx.get(gw.url + "/readyz").json()["config_generation"])


def test_sighup_keeps_old_config_on_invalid_edit_and_applies_valid_one(
    upstream: tuple[FakeUpstream, str], tmp_path: Path
) -> None:
    config = tmp_path / "tollgate.yaml"
    original = gateway_config(upstream[1])
    config.write_text(original)
    with GatewayProcess(config, env=GATEWAY_ENV, log=tmp_path / "gw.log") as gw:
        assert chat(gw, "chat") == "Hello from the fake."
        config.write_text(
            original.replace(
                "models:\n", "models:\n  broken: {targets: [{backend: fake, model: m}]}\n"
            )
        )
        gw.sighup()
        until(lambda: "configuration reload rejected" in gw.logs())
        # A config in the shape before tiers is told what replaced it.
        assert "models.broken.targets: Value error, `targets` was replaced by tiers" in gw.logs()
        assert generation(gw) == 1
        assert chat(gw, "chat") == "Hello from the fake."
        config.write_text(original.replace("  emb:\n", "  renamed:\n"))
        gw.sighup()
        until(lambda: generation(gw) == 2)
        assert chat(gw, "renamed") == "Hello from the fake."
        with pytest.raises(openai.NotFoundError):
            chat(gw, "emb")


def test_file_change_is_picked_up_without_a_signal(
    upstream: tuple[FakeUpstream, str], tmp_path: Path
) -> None:
    config = tmp_path / "tollgate.yaml"
    original = gateway_config(upstream[1]).replace(
        "reload_poll_seconds: 0", "reload_poll_seconds: 0.1"
    )
    config.write_text(original)
    with GatewayProcess(config, env=GATEWAY_ENV) as gw:
        config.write_text(original.replace("  nousage:\n", "  polled:\n"))
        until(lambda: generation(gw) == 2)
        assert chat(gw, "polled") == "Hello from the fake."


def test_in_flight_call_finishes_on_the_config_it_started_with(
    upstream: tuple[FakeUpstream, str], tmp_path: Path
) -> None:
    config = tmp_path / "tollgate.yaml"
    original = gateway_config(upstream[1])
    config.write_text(original)
    with GatewayProcess(config, env=GATEWAY_ENV) as gw:
        c = openai.OpenAI(base_url=gw.url + "/v1", api_key=KEY, max_retries=0)
        stream = c.chat.completions.create(
            model="endless", stream=True, messages=[{"role": "user", "content": "x"}]
        )
        next(iter(stream))
        config.write_text(original.replace("  endless:\n", "  gone:\n"))
        gw.sighup()
        until(lambda: generation(gw) == 2)
        received = [chunk for _, chunk in zip(range(5), stream, strict=False)]
        assert len(received) == 5  # the stream kept flowing on the old runtime
        stream.close()


def test_multiple_workers_serve(upstream: tuple[FakeUpstream, str], tmp_path: Path) -> None:
    config = tmp_path / "tollgate.yaml"
    config.write_text(gateway_config(upstream[1]))
    with GatewayProcess(config, env=GATEWAY_ENV, workers=2) as gw:
        assert all(chat(gw, "chat") == "Hello from the fake." for _ in range(4))
