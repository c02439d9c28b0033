"""What routing over many replicas costs per call: two Tollgate gateways in one run, one whose
`fast` alias is one backend, one whose `fast` alias is a tier of eight replicas (eight backends,
the same mock behind each) routed by `least_outstanding`, measured alternately.

    python bench/routing.py [--rounds 5] [--duration 8] [--out FILE]

See bench/ab.py for the method. Auditing is off in both, so only the routing differs.
"""

from __future__ import annotations

import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.ab import Variant, compare, run_cli, table

REPLICAS = 8


def eight(config: str) -> str:
    """The base config with `fast` served by a tier of eight replicas."""
    line = re.search(r"^  fast: \{type: openai, base_url: .*\}$", config, re.M)
    assert line is not None
    backends = "\n".join(line.group(0).replace("  fast:", f"  fast{i}:") for i in range(REPLICAS))
    replicas = ", ".join(f"{{backend: fast{i}, model: bench}}" for i in range(REPLICAS))
    config = config.replace(line.group(0), backends)
    return config.replace(
        "  fast: {backend: fast, model: bench}",
        f"  fast:\n    tiers: {{pool: [{replicas}]}}\n    strategy: least_outstanding",
    )


def run(args: Any) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="tollgate-bench-routing-"))
    variants = [
        Variant("single", "audit: {enabled: false}\n"),
        Variant("eight", "audit: {enabled: false}\n", transform=eight),
    ]
    try:
        result = compare(work, variants, args.rounds, args.duration)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(table(result, "single", "eight", ("one backend", f"{REPLICAS} replicas")))
    return result


if __name__ == "__main__":
    run_cli(__doc__ or "", run, lambda p: None)
