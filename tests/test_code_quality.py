"""The tree stays clean: lint, format, strict types and the one-way layer contract."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


# What every check below runs; .pre-commit-config.yaml must run the same before a commit.
CHECKS = (
    "ruff check gateway tests bench",
    "ruff format --check gateway tests bench",
    "python -m mypy",
    "lint-imports",
    "tests/test_code_quality.py -k modules_stay_small",
)


def run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)


def tool(name: str) -> str:
    found = shutil.which(name, path=str(Path(sys.executable).parent))
    assert found, f"{name} is not installed next to {sys.executable}"
    return found


def test_ruff_lint() -> None:
    result = run(tool("ruff"), "check", "gateway", "tests", "bench")
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format() -> None:
    result = run(tool("ruff"), "format", "--check", "gateway", "tests", "bench")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict() -> None:
    result = run(sys.executable, "-m", "mypy")
    assert result.returncode == 0, result.stdout + result.stderr


def test_lower_layers_never_import_higher_ones() -> None:
    result = run(tool("lint-imports"))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("path", sorted((ROOT / "gateway").rglob("*.py")), ids=str)
def test_modules_stay_small(path: Path) -> None:
    assert len(path.read_text().splitlines()) <= 400, "split this module along its jobs"


def test_pre_commit_runs_what_these_tests_run() -> None:
    import yaml

    config = yaml.safe_load((ROOT / ".pre-commit-config.yaml").read_text())
    entries = [hook["entry"] for repo in config["repos"] for hook in repo["hooks"]]
    for check in CHECKS:
        assert any(check in entry for entry in entries), f"pre-commit does not run {check!r}"
