"""Real servers for tests: a uvicorn app in a thread, and `tollgate serve` as a subprocess."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import uvicorn

# The secret the tests' gateways share as one fleet; a test of its absence passes its own env.
FLEET_SECRET = "tollgate-tests-fleet-secret"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ThreadServer:
    """Runs an ASGI app on a free port in a background thread with its own event loop."""

    def __init__(self, app: Any, port: int | None = None) -> None:
        self.port = port or free_port()
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=self.port,
            log_level="error",
            lifespan="off",
            loop="asyncio",
            http="h11",
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ThreadServer:
        self._thread.start()
        deadline = time.monotonic() + 15
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("test server did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(10)


class GatewayProcess:
    """`tollgate serve` as users run it, on a free port; ready once /readyz answers 200."""

    def __init__(
        self,
        config: Path | None,
        *,
        workers: int = 1,
        env: dict[str, str] | None = None,
        log: Path | None = None,
    ) -> None:
        self.port = free_port()
        self.config = config
        self.workers = workers
        # Gateways on a test's config are one fleet, sharing a secret (docs/deploy.md); the
        # embedded default runs as a newcomer runs it, generating its own.
        shared = {"TOLLGATE_SECRET": FLEET_SECRET} if config is not None else {}
        self.env = {**os.environ, **shared, **(env or {})}
        self._own_dir: tempfile.TemporaryDirectory[str] | None = None
        if "TOLLGATE_DATABASE_URL" not in (env or {}):
            # Each gateway gets its own SQLite file (keys, budgets, counters), removed at stop.
            self._own_dir = tempfile.TemporaryDirectory(prefix="tollgate-db-")
            self.env["TOLLGATE_DATABASE_URL"] = f"sqlite:///{self._own_dir.name}/tollgate.db"
        self._audit_dir: tempfile.TemporaryDirectory[str] | None = None
        if "TOLLGATE_AUDIT_DIR" not in (env or {}):
            # Its own audit journal too (a test that restarts a gateway passes the same one).
            self._audit_dir = tempfile.TemporaryDirectory(prefix="tollgate-audit-")
            self.env["TOLLGATE_AUDIT_DIR"] = self._audit_dir.name
        self.log_path = log
        self.proc: subprocess.Popen[bytes] | None = None
        self._out: Any = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> GatewayProcess:
        cmd = [
            sys.executable,
            "-m",
            "gateway",
            "serve",
            "--port",
            str(self.port),
            "--workers",
            str(self.workers),
            "--log-json",
        ]
        if self.config is not None:
            cmd += ["--config", str(self.config)]
        if self.log_path:
            if self._out is not None:  # a restart after a kill: the same log, appended to
                self._out.close()
            self._out = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        out = self._out or subprocess.DEVNULL
        self.proc = subprocess.Popen(cmd, stdout=out, stderr=out, env=self.env)
        deadline = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None:
                self.stop()
                raise RuntimeError(f"gateway exited with {self.proc.returncode}: {self.logs()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + "/readyz", timeout=1).status_code == 200:
                    return self
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"gateway not ready: {self.logs()}")
            time.sleep(0.05)

    def logs(self) -> str:
        if self.log_path and self.log_path.exists():
            return self.log_path.read_text(errors="replace")
        return ""

    def log_lines(self) -> list[str]:
        """The complete lines logged so far: a line still being written is left out."""
        text = self.logs()
        return text[: text.rfind("\n") + 1].splitlines()

    def sighup(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGHUP)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self._out is not None:
            self._out.close()
            self._out = None
        for own in (self._own_dir, self._audit_dir):
            if own is not None:
                own.cleanup()
        self._own_dir = self._audit_dir = None

    def __enter__(self) -> GatewayProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def gateway(config: Path | None, **kwargs: Any) -> Iterator[GatewayProcess]:
    with GatewayProcess(config, **kwargs) as proc:
        yield proc
