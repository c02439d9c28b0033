"""What tracing, metrics and spend rollups cost: Tollgate gateways in one run, identical but
for `telemetry:`, measured alternately (bench/ab.py).

    python bench/telemetry.py [--rounds 5] [--duration 8] [--variants on,json] [--out FILE]

Variants: `off`; `on` (every call traced into the rollups and metrics, rollups flushed to SQL,
no OTLP endpoint); `export` and `json`: every trace exported to a stand-in collector over
http/protobuf and over http/json; `sampled`: 10% of traces exported (http/protobuf), the
rollups still seeing every call. The run then checks that the rollups of each variant with
telemetry on hold as many calls as its audit log (every call).
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.ab import Variant, compare, run_cli, table
from bench.run import free_port, process

ROOT = Path(__file__).resolve().parent.parent


def run(args: Any) -> dict[str, Any]:
    from sqlalchemy import func, select

    from gateway.audit import tables as audit_tables
    from gateway.stores.sql import make_engine
    from gateway.telemetry.tables import spend

    work = Path(tempfile.mkdtemp(prefix="tollgate-bench-telemetry-"))
    print(f"work directory: {work}", file=sys.stderr)
    port = free_port()
    collector = f"http://127.0.0.1:{port}"
    otlp = f'  otlp: {{endpoint: "{collector}", metrics_interval_seconds: 5}}\n'
    variants = [
        Variant("off", "telemetry: {enabled: false}\n"),
        Variant("on", ""),
        Variant("export", "telemetry:\n" + otlp),
        Variant("json", "telemetry:\n" + otlp.replace("}", ", protocol: http/json}")),
        Variant("sampled", "telemetry:\n  sample_ratio: 0.1\n" + otlp),
    ]
    if args.variants:
        wanted = {"off", *args.variants.split(",")}
        variants = [v for v in variants if v.name in wanted]
    try:
        cmd = [sys.executable, str(ROOT / "bench" / "mock_collector.py"), "--port", str(port)]
        with process(cmd, 1, collector):
            result = compare(work, variants, args.rounds, args.duration, latency=not args.rps_only)
        time.sleep(1)
        rolled = {}
        for v in variants[1:]:
            engine = make_engine(f"sqlite:///{work}/{v.name}.db")
            with engine.connect() as conn:
                query = select(func.sum(spend.c.requests)).where(spend.c.granularity == "day")
                events = select(func.count()).select_from(audit_tables.events)
                rolled[v.name] = (conn.execute(query).scalar(), conn.execute(events).scalar())
            engine.dispose()
        result["rolled_up_vs_audited_calls"] = rolled
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    labels = {
        "on": "on (rollups + metrics)",
        "export": "on + OTLP http/protobuf, all traces",
        "json": "on + OTLP http/json, all traces",
        "sampled": "on + OTLP http/protobuf, 10% sampled",
    }
    for v in variants[1:]:
        print(table(result, "off", v.name, ("telemetry off", labels[v.name])))
        print()
    for name, (calls, events) in rolled.items():
        verdict = "equal" if calls == events else "DIFFERENT"
        print(f"{name}: {calls:,} calls in the rollups, {events:,} in the audit log ({verdict})")
    return result


def _options(parser: Any) -> None:
    parser.add_argument("--rps-only", action="store_true", help="Skip the latency phase.")
    parser.add_argument("--variants", default="", help="Compare only these with off (comma list).")
    parser.add_argument("--keep", action="store_true", help="Keep configs and gateway logs.")


if __name__ == "__main__":
    run_cli(__doc__ or "", run, _options)
