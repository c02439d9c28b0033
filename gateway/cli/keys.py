"""`tollgate keys`: virtual API keys, created, listed and revoked in the gateways' database."""

from __future__ import annotations

import time

import click

from gateway.admin.keys import (
    KeyCreate,
    KeyRefused,
    KeyRotate,
    KeyRow,
    iso,
    list_keys,
    new_key,
    revoke_key,
    rotate,
)
from gateway.cli.helpers import Admin, config_option, csv_list, fail, json_option, show, validated


@click.group()
def keys() -> None:
    """Virtual API keys."""


@keys.command("create")
@config_option
@json_option
@click.option("--name", required=True)
@click.option("--team")
@click.option("--user")
@click.option("--org")
@click.option("--tags", help="Comma-separated.")
@click.option("--models", help="Comma-separated model aliases this key may use (default: all).")
@click.option("--expires", help="ISO 8601 time with zone, or a duration: 30d, 12h, 90m.")
def keys_create(
    config_path: str | None,
    as_json: bool,
    name: str,
    team: str | None,
    user: str | None,
    org: str | None,
    tags: str | None,
    models: str | None,
    expires: str | None,
) -> None:
    """Create a key and print its secret (shown this once only)."""
    admin = Admin.load(config_path)
    spec = validated(
        KeyCreate,
        name=name,
        team=team,
        user=user,
        org=org,
        tags=csv_list(tags),
        models=csv_list(models),
        expires=expires,
    )
    unknown = [m for m in spec.models or () if m not in admin.config.models]
    if unknown:
        fail(f"unknown model(s): {', '.join(unknown)} (models: {', '.join(admin.config.models)})")
    try:
        row, secret = new_key(admin.engine(), admin.secret(), spec, admin.config)
    except KeyRefused as exc:
        fail(str(exc.args[0]))
    show(
        {**row.public(), "key": secret},
        as_json,
        lambda: f"{secret}\n(key {row.id} '{row.name}': store the secret now, it is not kept)",
    )


@keys.command("list")
@config_option
@json_option
@click.option("--active", is_flag=True, help="Hide revoked keys.")
def keys_list(config_path: str | None, as_json: bool, active: bool) -> None:
    """List keys (never their secrets)."""
    rows = list_keys(Admin.load(config_path).engine(), include_revoked=not active)
    now = time.time()

    def text() -> str:
        head = ("ID", "NAME", "ORG", "TEAM", "USER", "PREFIX", "STATUS", "EXPIRES", "CREATED",
                "TAGS", "MODELS")  # fmt: skip
        table = [head] + [_listed(r, now) for r in rows]
        widths = [max(len(line[i]) for line in table) for i in range(len(head))]
        return "\n".join(
            "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
            for line in table
        )

    show([_iso_times(r) for r in rows], as_json, text)


_TIMES = ("created_at", "expires_at", "revoked_at", "rotated_at", "previous_expires_at")


def _iso_times(row: KeyRow) -> dict[str, object]:
    public = row.public()
    for name in _TIMES:
        value = public[name]
        public[name] = iso(value) if isinstance(value, float | int) else None
    return public


def _status(row: KeyRow, now: float) -> str:
    if row.revoked_at:
        return "revoked"
    if row.expires_at and row.expires_at <= now:
        return "expired"
    if row.previous_expires_at and row.previous_expires_at > now:
        return f"rotated (old secret {row.previous_prefix}... until {iso(row.previous_expires_at)})"
    return "active"


def _listed(row: KeyRow, now: float) -> tuple[str, ...]:
    return (
        row.id,
        row.name,
        row.org or "-",
        row.team or "-",
        row.user or "-",
        row.prefix,
        _status(row, now),
        iso(row.expires_at) or "never",
        iso(row.created_at) or "-",
        ",".join(row.tags) or "-",
        ",".join(row.models) if row.models is not None else "all",
    )


@keys.command("revoke")
@config_option
@click.argument("key")
def keys_revoke(config_path: str | None, key: str) -> None:
    """Revoke KEY (id or name); every gateway refuses it within keys.refresh_seconds."""
    try:
        row = revoke_key(Admin.load(config_path).engine(), key)
    except KeyRefused as exc:
        fail(str(exc.args[0]))
    click.echo(f"revoked {row.id} '{row.name}'")


@keys.command("rotate")
@config_option
@json_option
@click.argument("key")
@click.option(
    "--grace",
    default="24h",
    show_default=True,
    help="How long the current secret keeps working beside the new one (e.g. 24h, 30m, 0s).",
)
def keys_rotate(config_path: str | None, as_json: bool, key: str, grace: str) -> None:
    """Issue a new secret for KEY (id or name): same key id, so its budgets, limits and history
    carry over; the old secret stops after the grace period."""
    admin = Admin.load(config_path)
    spec = validated(KeyRotate, grace=grace)
    try:
        row, secret = rotate(admin.engine(), admin.secret(), key, spec)
    except KeyRefused as exc:
        fail(str(exc.args[0]))
    until = iso(row.previous_expires_at)
    show(
        {**_iso_times(row), "key": secret},
        as_json,
        lambda: (
            f"{secret}\n(key {row.id} '{row.name}' rotated: store the secret now, it is "
            "not kept; "
            + (
                f"the old secret works until {until})"
                if until
                else "the old secret no longer works)"
            )
        ),
    )
