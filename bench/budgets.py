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

LIMITS = """
audit: {{enabled: false}}
limits:
  store: redis
  redis_url: {redis}
  key_prefix: {prefix}
  budgets:
    - {{name: team-month, scope: team, subject: "*", usd: 1000000, window: month}}
    - {{name: key-day, scope: key, subject: "*", tokens: 1000000000000, window: day}}
  rate_limits:
    - {{name: per-key, scope: key, subject: "*", rpm: 100000000, tpm: 100000000000}}
"""


def run(args: Any) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="tollgate-bench-budgets-"))
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    variants = [
        Variant("plain", "audit: {enabled: false}\n"),
        Variant("limited", LIMITS.format(redis=args.redis, prefix=prefix)),
    ]
    try:
        result = compare(work, variants, args.rounds, args.duration)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        _drop_prefix(args.redis, prefix)
    print(table(result, "plain", "limited", ("no limits", "budgets + rate limit (Redis)")))
    return result


def _drop_prefix(redis_url: str, prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match="\\{" + prefix + "\\}:*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


if __name__ == "__main__":
    run_cli(
        __doc__ or "",
        run,
        lambda p: p.add_argument("--redis", default="redis://127.0.0.1:6379/0"),
    )
