"""The server secret that keys virtual-key digests: from the environment, or generated once.

A fleet must share it (set the environment variable on every process); a single embedded
gateway gets one generated into its data directory, readable only by its owner.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from pathlib import Path


def server_secret(env_name: str, data_dir: Path, env: Mapping[str, str] | None = None) -> bytes:
    environ = os.environ if env is None else env
    value = environ.get(env_name)
    if value:
        return value.encode()
    path = data_dir / "secret"
    try:
        return path.read_bytes().strip()
    except FileNotFoundError:
        pass
    data_dir.mkdir(parents=True, exist_ok=True)
    fresh = secrets.token_urlsafe(48).encode()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process won the race: use theirs
        return path.read_bytes().strip()
    with os.fdopen(fd, "wb") as out:
        out.write(fresh)
    return fresh


def data_dir_of(database_url: str) -> Path:
    """Where embedded state lives: beside the SQLite file, else ./.tollgate."""
    if database_url.startswith("sqlite:///") and ":memory:" not in database_url:
        return Path(database_url[len("sqlite:///") :]).parent
    return Path(".tollgate")
