"""`tollgate keys`: virtual API keys, created, listed and revoked in the gateways' database."""

from __future__ import annotations

import time

import click

from gateway.admin.keys import KeyCreate, KeyRefused, list_keys, new_key, revoke_key
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
        lines = [f"{'ID':22} {'NAME':20} {'TEAM':12} {'USER':12} {'PREFIX':11} STATUS"]
        for r in rows:
            status = (
                "revoked"
                if r.revoked_at
                else "expired"
                if r.expires_at and r.expires_at <= now
                else "active"
            )
            lines.append(
                f"{r.id:22} {r.name:20} {r.team or '-':12} {r.user or '-':12} "
                f"{r.prefix:11} {status}"
            )
        return "\n".join(lines)

    show([r.public() for r in rows], as_json, text)


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
