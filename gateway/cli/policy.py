"""`tollgate policy check|explain`: what ops ask of their rules before they are loaded."""

from __future__ import annotations

import asyncio
import json
import sys

import click
from pydantic import ValidationError

from gateway.admin.policy import ExplainQuery, check, explain_call, offline_runtime
from gateway.cli.helpers import load_or_exit
from gateway.settings import Settings

_CONFIG = click.option(
    "--config", "config_path", default=None, help="tollgate.yaml (default: as `serve` finds it)"
)


@click.group()
def policy() -> None:
    """Policy rules: check them, explain what they would do."""


@policy.command("check")
@click.argument("files", nargs=-1, type=click.Path(dir_okay=False, exists=True))
@_CONFIG
def policy_check(files: tuple[str, ...], config_path: str | None) -> None:
    """Validate the policy FILES (default: the config's own) against the config: errors at
    file:line (exit 2), then warnings (rules never reached, actions always overridden)."""
    path = Settings(config_path=config_path).resolved_config_path()
    try:
        from gateway.config.loader import load_config
        from gateway.errors import ConfigError

        loaded = load_config(path, check_env=False, policy_files=files or None)
    except ConfigError as exc:
        click.echo(f"invalid policies ({len(exc.problems)} problem"
                   f"{'s' if len(exc.problems) != 1 else ''}):", err=True)  # fmt: skip
        for problem in exc.problems:
            click.echo(f"  {problem}", err=True)
        sys.exit(2)
    warnings = check(loaded)
    for warning in warnings:
        click.echo(f"warning: {warning}", err=True)
    rules = sum(len(getattr(s.options, "rules", ())) for s in loaded.policies)
    click.echo(f"OK: {len(loaded.policies)} policies, {rules} rules, {len(loaded.files) - 1} "
               f"policy files, {len(warnings)} warnings")  # fmt: skip


@policy.command("explain")
@click.option("--model", required=True)
@click.option("--key", default=None, help="a static key's name (its team, org and tags apply)")
@click.option("--team", default=None)
@click.option("--header", "headers", multiple=True, help="NAME:VALUE (repeatable)")
@click.option("--prompt-tokens", type=int, default=None)
@click.option("--max-tokens", type=int, default=None)
@click.option("--stream", is_flag=True)
@click.option("--json", "as_json", is_flag=True)
@_CONFIG
def policy_explain(
    model: str, key: str | None, team: str | None, headers: tuple[str, ...],
    prompt_tokens: int | None, max_tokens: int | None, stream: bool, as_json: bool,
    config_path: str | None,
) -> None:  # fmt: skip
    """Each rule, each condition's result, and the plan that follows, for a call like this.
    Offline: budget conditions read no counters here (GET /admin/policy/explain reads the
    running gateway's)."""
    loaded = load_or_exit(Settings(config_path=config_path).resolved_config_path(),
                          check_env=False)  # fmt: skip
    try:
        query = ExplainQuery(
            model=model,
            key=key,
            team=team,
            header=headers,
            prompt_tokens=prompt_tokens,
            max_tokens=max_tokens,
            stream=stream,
        )
        result = asyncio.run(explain_call(offline_runtime(loaded), query)).public()
    except (ValidationError, ValueError) as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    click.echo(render(result))


def render(result: dict[str, object]) -> str:
    """The explanation as ops read it in a terminal."""
    lines: list[str] = []
    for rule in result["rules"]:  # type: ignore[attr-defined]
        head = f"{rule['rule']} ({rule['mode']}): "
        if not rule["evaluated"]:
            lines.append(head + "not evaluated (an earlier rule stopped or refused)")
            continue
        lines.append(head + ("MATCHES -> " + rule["actions"] if rule["matched"] else "no match"))
        if rule.get("route"):
            lines.append(f"    route {rule['route']}")
        for c in rule["conditions"]:
            mark = {True: "yes", False: "no", None: "cannot tell"}[c["holds"]]
            lines.append(f"    {c['condition']}: {mark} ({c['seen']})")
    lines.append("")
    if result["denied"]:
        denied = result["denied"]
        lines.append(f"refused by rule {denied['rule']}: {denied['status']} {denied['message']}")  # type: ignore[index]
        return "\n".join(lines)
    lines.append(f"route: {result['route'] or 'the default tier'}")
    cap = result["max_tokens"]
    if cap:
        how = f"set to {cap['set']}" if "set" in cap else f"capped at {cap['cap']}"  # type: ignore[operator,index]
        lines.append(f"max_tokens: {how} (rule {cap['rule']})")  # type: ignore[index]
    deferred = result.get("deferred")
    if deferred:
        lines.append(f"waits: up to {deferred['max_wait_seconds']:g} s for spare capacity "  # type: ignore[index]
                     f"(rule {deferred['rule']})")  # type: ignore[index]  # fmt: skip
    for step in result["plan"]:  # type: ignore[attr-defined]
        replicas = ", ".join(f"{r['backend']}/{r['model']} ({r['circuit']})"
                             for r in step["replicas"])  # fmt: skip
        lines.append(f"then {step['alias']} tier {step['tier']} ({step['why']}; "
                     f"{step['strategy']}): {replicas}")  # fmt: skip
    return "\n".join(lines)


_URL = click.option(
    "--url", default="http://127.0.0.1:8080", show_default=True, help="the running gateway"
)


def _admin(method: str, url: str, path: str) -> dict[str, object]:
    """A call to the running gateway's admin API with the admin key from the environment."""
    import os

    import httpx

    key = os.environ.get("TOLLGATE_ADMIN_KEY")
    if not key:
        click.echo("error: set TOLLGATE_ADMIN_KEY to the gateway's admin key", err=True)
        sys.exit(2)
    try:
        auth = {"authorization": f"Bearer {key}"}
        response = httpx.request(method, url.rstrip("/") + path, headers=auth, timeout=10)
    except httpx.HTTPError as exc:
        click.echo(f"error: cannot reach {url}: {exc}", err=True)
        sys.exit(1)
    body = response.json()
    if response.status_code != 200:
        click.echo(f"error: {body.get('error', {}).get('message', response.text)}", err=True)
        sys.exit(1)
    return body  # type: ignore[no-any-return]


@policy.command("status")
@_URL
def policy_status(url: str) -> None:
    """Each running rule, and its quality guard's agreement and suspension."""
    for rule in _admin("GET", url, "/admin/policy/rules")["rules"]:  # type: ignore[attr-defined]
        guard = rule["guard"]
        if guard is None:
            click.echo(f"{rule['rule']} ({rule['mode']})")
            continue
        rate = "n/a" if guard["agreement"] is None else f"{guard['agreement']:.1%}"
        state = "SUSPENDED" if guard["suspended"] else "active"
        click.echo(f"{rule['rule']} ({rule['mode']}): guard {state}, agreement {rate} over "
                   f"{guard['window']} of {guard['samples']} samples")  # fmt: skip


@policy.command("resume")
@click.argument("rule")
@_URL
def policy_resume(rule: str, url: str) -> None:
    """Lift the suspension a quality guard put on RULE: it routes again, judged afresh."""
    result = _admin("POST", url, f"/admin/policy/rules/{rule}/resume")
    was = "was suspended" if result["was_suspended"] else "was not suspended"
    click.echo(f"{rule}: resumed ({was})")
