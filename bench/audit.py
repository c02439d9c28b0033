"""What the audit log costs: Tollgate gateways in one run, identical but for `audit:` (off; on
with PostgreSQL on loopback as the audit database, its audit worker process placed by default,
i.e. off the pinned gateway's core; on, with the worker forced onto the gateway's core),
measured alternately.

    python bench/audit.py [--rounds 5] [--duration 8] [--pg postgresql://...] [--out FILE]

See bench/ab.py for the method. The database is created for the run and dropped after; the
run also checks that every request the load generator sent to the audited gateway arrived in
SQL (events == gateway requests, read from /readyz and the table).
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.ab import Variant, compare, run_cli, table


def run(args: Any) -> dict[str, Any]:
    from sqlalchemy import create_engine, func, select, text

    from gateway.audit import tables
    from gateway.stores.migrate import upgrade
    from gateway.stores.sql import make_engine

    name = f"tgbench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(args.pg.rsplit("/", 1)[0] + "/test", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = args.pg.rsplit("/", 1)[0] + f"/{name}"
    engine = make_engine(url)
    upgrade(engine)
    work = Path(tempfile.mkdtemp(prefix="tollgate-bench-audit-"))
    print(f"work directory: {work}", file=sys.stderr)
    env = {"TOLLGATE_DATABASE_URL": url, "TOLLGATE_SECRET": "bench"}
    variants = [
        Variant("off", "audit: {enabled: false}\n"),
        Variant("on", "", env),  # default: the worker avoids the pinned gateway's core
        Variant("shared", "audit: {worker_cpus: [0]}\n", env),  # forced onto it
    ]
    try:
        result = compare(work, variants, args.rounds, args.duration, latency=not args.rps_only)
        time.sleep(2)  # the last batches ship
        with engine.connect() as conn:
            result["audited_events"] = conn.execute(
                select(func.count()).select_from(tables.events)
            ).scalar()
    finally:
        engine.dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(table(result, "off", "on", ("auditing off", "auditing on (default)")))
    print()
    print(table(result, "off", "shared", ("auditing off", "on, worker on the gateway's core")))
    print(f"events in the audit table after the run: {result['audited_events']:,}")
    return result


def _options(parser: Any) -> None:
    parser.add_argument("--pg", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    parser.add_argument("--rps-only", action="store_true", help="Skip the latency phase.")
    parser.add_argument("--keep", action="store_true", help="Keep configs and gateway logs.")


if __name__ == "__main__":
    run_cli(__doc__ or "", run, _options)
