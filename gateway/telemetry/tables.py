"""The spend rollups' schema (SQLAlchemy Core); migrations/versions/0003_rollups.py creates it.

One row per time bucket x team x key x model x tier x cache outcome, at three granularities
(minute, hour, day; buckets start at UTC boundaries, as epoch seconds). Money is integer
nano-dollars, as in the audit log. A dimension that does not apply is '' (never NULL: it is part
of the primary key every process adds into).
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Index, SmallInteger, String, Table

from gateway.call import SAVINGS_KINDS
from gateway.stores.sql import metadata

GRANULARITIES = {"minute": 60, "hour": 3600, "day": 86400}
DIMENSIONS = ("team", "key_id", "model", "tier", "cache")
SUMS = (
    "requests",
    "errors",
    "denied",
    "cache_hits",
    "input_tokens",
    "output_tokens",
    "cached_tokens",
    "cost_nanousd",
    "counterfactual_nanousd",
    *(f"savings_{kind}_nanousd" for kind in SAVINGS_KINDS),
    "latency_us_sum",
    "ttft_us_sum",
    "ttft_count",
)
# Upper bounds (ms) of the latency histogram's bins; the last is open-ended.
LATENCY_BINS_MS = (
    5, 10, 25, 50, 75, 100, 150, 250, 400, 600, 1000, 1500, 2500, 4000, 6000, 10000, 15000,
    25000, 40000, 60000, 120000,
)  # fmt: skip

spend = Table(
    "tollgate_spend_rollups",
    metadata,
    Column("granularity", String(8), primary_key=True),
    Column("bucket_start", BigInteger, primary_key=True),
    *(Column(name, String(200), primary_key=True) for name in DIMENSIONS),
    *(Column(name, BigInteger, nullable=False, server_default="0") for name in SUMS),
    Column("key_name", String(200), nullable=False, server_default=""),  # latest seen
    Index("ix_tollgate_spend_rollups_time", "granularity", "bucket_start"),
)

latency = Table(
    "tollgate_latency_rollups",
    metadata,
    Column("granularity", String(8), primary_key=True),
    Column("bucket_start", BigInteger, primary_key=True),
    Column("model", String(200), primary_key=True),
    Column("metric", String(8), primary_key=True),  # latency | ttft
    Column("bin", SmallInteger, primary_key=True),  # index into LATENCY_BINS_MS (+1: beyond)
    Column("count", BigInteger, nullable=False, server_default="0"),
)

# What each shadow rule would have saved (docs/policies.md, "Shadow rules"): one row per bucket
# and rule; negative when the rule would have cost more.
shadows = Table(
    "tollgate_shadow_rollups",
    metadata,
    Column("granularity", String(8), primary_key=True),
    Column("bucket_start", BigInteger, primary_key=True),
    Column("rule", String(100), primary_key=True),
    Column("calls", BigInteger, nullable=False, server_default="0"),
    Column("savings_nanousd", BigInteger, nullable=False, server_default="0"),
)
