"""What policy rules cost per call: two Tollgate gateways in one run, identical but for a
`rules` policy of 50 rules every call evaluates (49 that do not match, each testing the model,
the caller's team and a header; one that matches and labels the call), measured alternately.

    python bench/rules.py [--rounds 5] [--duration 8] [--out FILE]

See bench/ab.py for the method. Auditing is off in both, so only the rules differ.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.ab import Variant, compare, run_cli, table

RULES = 50


def rules_yaml(count: int = RULES) -> str:
    """`count` rules: all but the last test three conditions and fail on the header."""
    lines = ["  - use: rules", "    with:", "      rules:"]
    for i in range(count - 1):
        lines.append(
            f"        - {{name: r{i}, match: {{model: fast, team: bench, "
            f"headers: {{x-never: '{i}'}}}}, actions: {{labels: {{rule: r{i}}}}}}}"
        )
    lines.append("        - {name: last, match: {model: fast}, actions: {labels: {seen: 'yes'}}}")
    return "\n".join(lines) + "\n"


def with_rules(config: str) -> str:
    return config.replace("policies:\n", "policies:\n" + rules_yaml(), 1)


def run(args: Any) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="tollgate-bench-rules-"))
    variants = [
        Variant("plain", "audit: {enabled: false}\n"),
        Variant("rules", "audit: {enabled: false}\n", transform=with_rules),
    ]
    try:
        result = compare(work, variants, args.rounds, args.duration)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(table(result, "plain", "rules", ("no rules", f"{RULES} rules")))
    return result


if __name__ == "__main__":
    run_cli(__doc__ or "", run, lambda p: None)
