"""deploy/Dockerfile read as the image's runtime sees it (no Docker daemon on these machines)."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

DOCKERFILE = Path(__file__).resolve().parents[2] / "deploy" / "Dockerfile"


def final_stage() -> dict[str, object]:
    """ENV, ENTRYPOINT, CMD, VOLUME, USER and HEALTHCHECK of the Dockerfile's last stage."""
    lines = DOCKERFILE.read_text().replace("\\\n", " ").splitlines()
    start = max(i for i, line in enumerate(lines) if line.startswith("FROM "))
    stage: dict[str, object] = {"ENV": {}}
    for line in lines[start:]:
        word, _, rest = line.strip().partition(" ")
        if word == "ENV":
            env = stage["ENV"]
            assert isinstance(env, dict)
            env.update(dict(item.split("=", 1) for item in shlex.split(rest)))
        elif word in ("ENTRYPOINT", "CMD", "VOLUME"):
            stage[word] = json.loads(rest)
        elif word == "USER":
            stage[word] = rest.strip()
        elif word == "HEALTHCHECK":
            stage[word] = json.loads(rest[rest.index("CMD ") + 4 :])
    return stage
