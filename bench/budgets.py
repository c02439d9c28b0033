"""What budgets and rate limits cost per call: two Tollgate gateways in one run, identical but
for `limits:` (Redis on loopback, a team budget, a key budget and a per-key rate limit that
every call checks and none reaches), measured alternately so machine noise hits both alike.

    python bench/budgets.py [--rounds 5] [--duration 8] [--out FILE]

See bench/ab.py for the method. Auditing is off in both, so only the limits differ.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.ab import Variant, compare, run_cli, table
from bench.run import LIMITS, drop_prefix


def run(args: Any) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="tollgate-bench-budgets-"))
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    variants = [
        Variant("plain", "audit: {enabled: false}\n"),
        Variant(
            "limited", "audit: {enabled: false}\n" + LIMITS.format(redis=args.redis, prefix=prefix)
        ),
    ]
    try:
        result = compare(work, variants, args.rounds, args.duration)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        drop_prefix(args.redis, prefix)
    print(table(result, "plain", "limited", ("no limits", "budgets + rate limit (Redis)")))
    return result


if __name__ == "__main__":
    run_cli(
        __doc__ or "",
        run,
        lambda p: p.add_argument("--redis", default="redis://127.0.0.1:6379/0"),
    )
