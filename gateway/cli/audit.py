"""`tollgate audit verify|export|prune`: the auditor's commands, run against the same database
(and signing key) as the gateways."""

from __future__ import annotations

import re
import sys
from datetime import UTC, datetime, timedelta
from typing import IO

import click

from gateway.audit.signing import Signer, signing_key
from gateway.cli.helpers import Admin, config_option, fail
from gateway.stores.secret import data_dir_of

_AGO = re.compile(r"^(\d+)([dhm])$")
_UNITS = {"d": "days", "h": "hours", "m": "minutes"}


def when(value: str | None) -> datetime | None:
    """ISO 8601 (a date, or a time; UTC unless a zone is given) or a duration ago (30d, 12h)."""
    if value is None:
        return None
    if m := _AGO.match(value.strip()):
        return datetime.now(UTC) - timedelta(**{_UNITS[m.group(2)]: int(m.group(1))})
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        fail(
            f"not a time: {value!r} (use ISO 8601, e.g. 2026-11-01 or 2026-11-01T12:00:00Z, or 30d)"
        )
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _signer(admin: Admin) -> Signer:
    audit = admin.config.audit
    if audit.signing_key_env is None:
        admin.require_fleet_secret()
    try:
        key = signing_key(
            audit.signing_key_env, admin.config.keys.secret_env, data_dir_of(admin.url)
        )
    except ValueError as exc:
        fail(str(exc))
    return Signer(key)


@click.group()
def audit() -> None:
    """Verify, export and prune the audit log."""


@audit.command("verify")
@config_option
@click.option("--since", help="Only rows received from this time (ISO 8601 or 30d).")
@click.option(
    "--all", "every", is_flag=True, help="Report every problem, not only each chain's first."
)
def audit_verify(config_path: str | None, since: str | None, every: bool) -> None:
    """Recompute the hash chains and check signed heads and checkpoints. Exit 1 on tampering
    (problems a signed acknowledgement covers are listed, and do not fail the check)."""
    from gateway.audit.verify import verify

    admin = Admin.load(config_path)
    report = verify(admin.engine(), _signer(admin), when(since), every=every)
    for problem, ack in report.acknowledged:
        click.echo(f"ACKNOWLEDGED {problem.describe()} [{ack.describe()}]")
    for quarantined in report.quarantined:
        click.echo(quarantined.describe())
    for problem in report.problems:
        click.echo(problem.describe())
    summary = (
        f"{report.rows} events in {report.chains} chain(s), {report.chains_ok} verified "
        f"({report.checkpoints} signed checkpoints"
        + (f", {len(report.acknowledged)} acknowledged problems" if report.acknowledged else "")
        + (f", {len(report.quarantined)} quarantined events" if report.quarantined else "")
        + ")"
    )
    if report.ok:
        click.echo(f"OK: {summary}")
        return
    click.echo(f"FAILED: {len(report.problems)} problem(s); {summary}", err=True)
    sys.exit(1)


@audit.command("acknowledge")
@config_option
@click.option("--chain", "chain_id", required=True, help="The chain the problems are in.")
@click.option("--seq", "seqs", help="N or N-M: the rows; omit for a problem of the chain's head.")
@click.option("--note", required=True, help="What happened and who looked into it.")
def audit_acknowledge(config_path: str | None, chain_id: str, seqs: str | None, note: str) -> None:
    """Record a known incident, signed with the audit key: verify lists its problems as
    acknowledged, and prune may proceed past them. Only problems verify reports can be
    acknowledged."""
    from gateway.audit.incidents import Acknowledgement, acknowledge
    from gateway.audit.verify import verify

    span = _span(seqs)
    admin = Admin.load(config_path)
    engine, signer = admin.engine(), _signer(admin)
    report = verify(engine, signer, every=True)
    first, last = span if span is not None else (None, None)
    probe = Acknowledgement(0, chain_id, first, last, note)
    covered = [p for p in report.problems if probe.covers(p)]
    if not covered:
        fail(f"verify reports no unacknowledged problem in chain {chain_id} {seqs or '(head)'}")
    with engine.begin() as conn:
        ident = acknowledge(conn, signer, chain_id, span, note)
    click.echo(f"acknowledgement {ident} recorded for {len(covered)} problem(s):")
    for problem in covered:
        click.echo(f"  {problem.describe()}")


def _span(seqs: str | None) -> tuple[int, int] | None:
    if seqs is None:
        return None
    first, _, last = seqs.partition("-")
    try:
        lo, hi = int(first), int(last or first)
    except ValueError:
        fail(f"--seq: {seqs!r} is not N or N-M")
    if hi < lo:
        fail(f"--seq: {seqs!r} ends before it starts")
    return lo, hi


@audit.command("export")
@config_option
@click.option("--since", help="From this time (ISO 8601 or 30d), inclusive.")
@click.option("--until", help="Up to this time, exclusive.")
@click.option("--team", help="Only this team's events.")
@click.option(
    "--format", "fmt", type=click.Choice(["csv", "jsonl"]), default="jsonl", show_default=True
)
@click.option("--output", "-o", type=click.File("w"), default="-", help="File (default: stdout).")
def audit_export(
    config_path: str | None,
    since: str | None,
    until: str | None,
    team: str | None,
    fmt: str,
    output: IO[str],
) -> None:
    """Events with their decisions, money in USD, and each row's verification."""
    from gateway.audit.export import rows, write
    from gateway.audit.verify import verify

    admin = Admin.load(config_path)
    engine = admin.engine()
    flagged = verify(engine, _signer(admin), when(since), every=True).flagged()
    count = write(rows(engine, when(since), when(until), team, flagged), output, fmt)
    click.echo(f"exported {count} events", err=True)


@audit.command("prune")
@config_option
@click.option("--before", required=True, help="Remove events received before this time.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def audit_prune(config_path: str | None, before: str, yes: bool) -> None:
    """Delete old events, first writing a signed checkpoint so the chain still verifies."""
    from gateway.audit.prune import PruneRefused, prune

    cutoff = when(before)
    assert cutoff is not None
    if not yes:
        click.confirm(f"Delete audit events received before {cutoff.isoformat()}?", abort=True)
    admin = Admin.load(config_path)
    try:
        done = prune(admin.engine(), _signer(admin), cutoff)
    except PruneRefused as exc:
        fail(str(exc))
    for item in done:
        click.echo(
            f"chain {item.chain_id}: removed {item.rows} events (through seq {item.through_seq})"
        )
    if not done:
        click.echo("nothing to prune")
