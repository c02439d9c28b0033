"""The container image's entry point, run as a process the way the container runs it: the final
stage's ENV, ENTRYPOINT and CMD read from deploy/Dockerfile (no Docker daemon here), with only
the mounted config's path, the port and the volumes pointed at this test's own files.

It serves a mounted config; with no config mounted it says what to mount; `serve --demo` serves
the simulated demo on all interfaces; a fleet member without the shared secret refuses to start
and names the variable; the image's HEALTHCHECK command passes against it.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.support.dockerfile import final_stage
from tests.support.servers import free_port
from tests.support.services import postgres_database
from tests.support.wait import polled

KEY = "tg-image-key"


@contextlib.contextmanager
def container(tmp: Path, *args: str, env: dict[str, str] | None = None) -> Iterator[Container]:
    stage = final_stage()
    image_env = dict(stage["ENV"])  # type: ignore[call-overload]
    port = str(free_port())
    # What `docker run -v ... -p` would change: where the volumes and the config are, the port.
    image_env |= {"TOLLGATE_SERVE_PORT": port, "TOLLGATE_AUDIT_DIR": str(tmp / "audit")}
    # The image's environment has no TOLLGATE_ variable but its own (no secret, no database).
    base = {k: v for k, v in os.environ.items() if not k.startswith("TOLLGATE_")}
    entry = [str(Path(sys.executable).parent / stage["ENTRYPOINT"][0])]  # type: ignore[index]
    command = entry + list(args or stage["CMD"])  # type: ignore[call-overload]
    proc = subprocess.Popen(
        command, cwd=tmp, env={**base, **image_env, **(env or {})},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        yield Container(proc, int(port), image_env)
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(15)
        assert proc.stdout is not None
        proc.stdout.close()


class Container:
    def __init__(self, proc: subprocess.Popen[bytes], port: int, env: dict[str, str]) -> None:
        self.proc, self.port, self.env = proc, port, env
        self.url = f"http://127.0.0.1:{port}"

    def ready(self) -> bool:
        def probe() -> int:
            if self.proc.poll() is not None:
                return -1
            with contextlib.suppress(httpx.HTTPError):
                return httpx.get(self.url + "/readyz", timeout=1).status_code
            return 0

        return polled(probe, lambda status: status in (200, -1), timeout=30) == 200

    def exited(self) -> tuple[int, str]:
        code = self.proc.wait(30)
        assert self.proc.stdout is not None
        return code, self.proc.stdout.read().decode(errors="replace")


def write_config(tmp: Path, database: str | None = None) -> Path:
    path = tmp / "mounted" / "tollgate.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"""
version: 1
auth: {{keys: [{{name: app, key_env: TG_KEY}}]}}
{f"database: {{url: '{database}', auto_upgrade: true}}" if database else ""}
backends:
  gpu: {{type: sim, time_scale: 0, models: [{{name: m, default_max_tokens: 4}}]}}
models:
  chat: {{backend: gpu, model: m}}
""")
    return path


def test_the_image_serves_the_mounted_config_and_passes_its_healthcheck(tmp_path: Path) -> None:
    stage = final_stage()
    assert stage["USER"] not in ("root", "0")
    assert "/var/lib/tollgate/audit" in stage["VOLUME"]  # type: ignore[operator]
    config = write_config(tmp_path)
    with container(tmp_path, env={"TOLLGATE_CONFIG": str(config), "TG_KEY": KEY}) as c:
        assert c.env["TOLLGATE_SERVE_HOST"] == "0.0.0.0"
        assert c.ready(), c.exited()
        client = openai.OpenAI(base_url=c.url + "/v1", api_key=KEY, max_retries=0)
        reply = client.chat.completions.create(
            model="chat", messages=[{"role": "user", "content": "hi"}]
        )
        assert reply.choices[0].message.content
        client.close()
        check = subprocess.run(
            [sys.executable, *stage["HEALTHCHECK"][1:]],  # type: ignore[index]
            env={**os.environ, **c.env}, capture_output=True, timeout=10, check=False,
        )  # fmt: skip
        assert check.returncode == 0, check.stderr
        # The audit journal is written where the image's volume is.
        assert (tmp_path / "audit").is_dir()


def test_without_a_mounted_config_it_says_what_to_mount(tmp_path: Path) -> None:
    missing = str(tmp_path / "nowhere" / "tollgate.yaml")
    with container(tmp_path, env={"TOLLGATE_CONFIG": missing}) as c:
        code, out = c.exited()
    assert code == 2
    assert "mount your tollgate.yaml there" in out and "--demo" in out


def test_the_demo_is_opt_in_and_serves_on_all_interfaces(tmp_path: Path) -> None:
    with container(tmp_path, "serve", "--demo") as c:
        assert c.ready(), c.exited()
        models = httpx.get(c.url + "/v1/models", headers={"authorization": "Bearer any"})
        assert models.status_code == 200
    # Without --demo, the embedded default's open access stays on loopback.
    with container(tmp_path, "serve", env={"TOLLGATE_CONFIG": ""}) as c:
        code, out = c.exited()
    assert code == 2 and "refusing --host 0.0.0.0" in out


@pytest.mark.parametrize("shared", ["database", "redis"])
def test_a_fleet_member_without_the_shared_secret_refuses_and_names_it(
    tmp_path: Path, shared: str
) -> None:
    with contextlib.ExitStack() as stack:
        if shared == "database":
            config = write_config(tmp_path, stack.enter_context(postgres_database()))
        else:
            config = write_config(tmp_path)
            config.write_text(config.read_text() + "limits: {store: redis}\n")
        env = {"TOLLGATE_CONFIG": str(config), "TG_KEY": KEY}
        with container(tmp_path, env=env) as c:
            code, out = c.exited()
        assert code == 2
        assert "TOLLGATE_SECRET is not set" in out, out
        # `docker exec ... tollgate keys create` there: a key under a secret of its own would
        # be refused by every gateway, so it is refused here first.
        made = subprocess.run(
            [str(Path(sys.executable).parent / "tollgate"), "keys", "create", "--name", "x"],
            cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False,
            env={k: v for k, v in os.environ.items() if not k.startswith("TOLLGATE_")} | env,
        )  # fmt: skip
        assert made.returncode == 2 and "TOLLGATE_SECRET is not set" in made.stderr, made.stderr
        # With the secret, the same member starts.
        with container(tmp_path, env={**env, "TOLLGATE_SECRET": "s3cret"}) as c:
            assert c.ready(), c.exited()
