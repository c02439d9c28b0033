"""The `tollgate` command. Flags map 1:1 onto Settings; every flag also reads TOLLGATE_<NAME>."""

from __future__ import annotations

import ipaddress
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import click
import orjson

from gateway.cli.audit import audit
from gateway.cli.budgets import budgets, spend
from gateway.cli.checks import check_state
from gateway.cli.db import db
from gateway.cli.helpers import fail, load_or_exit
from gateway.cli.keys import keys
from gateway.cli.policy import policy
from gateway.cli.prices import prices
from gateway.logs import configure_logging

if TYPE_CHECKING:
    from gateway.accounting.tokens import TokenCounter
    from gateway.config.schema import Config

log = logging.getLogger("gateway.cli")
_SETTINGS_ENV = "TOLLGATE_SERVE_SETTINGS"


@click.group(
    context_settings={"auto_envvar_prefix": "TOLLGATE", "help_option_names": ["-h", "--help"]}
)
@click.version_option(package_name="tollgate", prog_name="tollgate")
def main() -> None:
    """Tollgate: an LLM cost-control gateway."""


@main.command()
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    default=None,
    envvar=["TOLLGATE_SERVE_CONFIG", "TOLLGATE_CONFIG"],
    help="tollgate.yaml; without it, the embedded simulated deployment runs.",
)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, type=int)
@click.option("--workers", default=1, show_default=True, type=click.IntRange(min=1))
@click.option(
    "--demo",
    is_flag=True,
    help="Serve the embedded simulated deployment on any host, accepting any key (a container "
    "demo; never in production).",
)
@click.option("--log-json/--log-text", default=None, help="Override logging.json from config.")
@click.option(
    "--upstream-transport",
    type=click.Choice(["aiohttp", "httpx"]),
    default="aiohttp",
    show_default=True,
    help="HTTP transport for network backends (httpx's own, e.g. for comparison).",
)
@click.pass_context
def serve(
    ctx: click.Context,
    config_path: str | None,
    host: str,
    port: int,
    workers: int,
    demo: bool,
    log_json: bool | None,
    upstream_transport: Literal["aiohttp", "httpx"],
) -> None:
    """Run the gateway."""
    from gateway.settings import Settings

    config_path = _config_to_serve(ctx, config_path, demo)
    settings = Settings(
        config_path=config_path,
        host=host,
        port=port,
        workers=workers,
        upstream_transport=upstream_transport,
        log_json=log_json,
    )
    loaded = load_or_exit(settings.resolved_config_path())
    config = loaded.config
    configure_logging(
        json_lines=settings.json_logs(config.logging.json_lines),
        level=config.logging.level,
    )
    check_state(config, workers, settings.resolved_config_path())
    _check_open_access(config.auth.mode, host, demo)
    tokens = _tokenizer() if workers == 1 else None
    from gateway.connections import server_options
    from gateway.serving import serve as run_server

    options: dict[str, Any] = {
        "host": host,
        "port": port,
        "loop": "uvloop",
        "lifespan": "on",
        "access_log": False,
        "log_level": "warning",
        "timeout_graceful_shutdown": 30,
        "server_header": False,  # do not advertise the server software
        **server_options(config),
    }
    click.echo(_serving_line(config_path, loaded.config, host, port, workers), err=True)
    if workers == 1:
        from gateway.app import create_app

        run_server(create_app(settings, loaded, tokens), **options)
        return
    os.environ[_SETTINGS_ENV] = settings.model_dump_json()
    run_server("gateway.cli.main:worker_app", factory=True, workers=workers, **options)


def _config_to_serve(ctx: click.Context, config_path: str | None, demo: bool) -> str | None:
    """The config file, or None for the embedded default. In the image the config's path comes
    from the environment (TOLLGATE_CONFIG), so `--demo` overrides that one, not a
    `--config` written on the command line."""
    if demo:
        if ctx.get_parameter_source("config_path") == click.core.ParameterSource.COMMANDLINE:
            fail("--demo serves the embedded simulated deployment: drop --config")
        return None
    if config_path is not None and not Path(config_path).exists():
        fail(
            f"{config_path} does not exist: mount your tollgate.yaml there (or name it with "
            "--config or TOLLGATE_CONFIG), or run `tollgate serve --demo` for the "
            "simulated demo"
        )
    return config_path


def _serving_line(
    config_path: str | None, config: Config, host: str, port: int, workers: int
) -> str:
    """What a newcomer needs first: which config, how much of it, and where to point curl."""
    what = config_path if config_path else "the embedded default (simulated backends)"
    shown = f"[{host}]" if ":" in host else host
    plural = "s" if workers != 1 else ""
    return (
        f"serving {what} ({len(config.backends)} backends, {len(config.models)} models) on "
        f"http://{shown}:{port}" + (f" with {workers} worker{plural}" if workers > 1 else "")
    )


def worker_app() -> Any:
    """Entry point uvicorn's multi-worker mode imports in each worker process."""
    from gateway.app import create_app
    from gateway.settings import Settings

    settings = Settings.model_validate(orjson.loads(os.environ[_SETTINGS_ENV]))
    loaded = load_or_exit(settings.resolved_config_path())
    configure_logging(
        json_lines=settings.json_logs(loaded.config.logging.json_lines),
        level=loaded.config.logging.level,
    )
    return create_app(settings, loaded, _tokenizer())


def _tokenizer() -> TokenCounter:
    """Built before the app: constructing it briefly holds a second copy of the vocabulary
    (~16 MB), which the app's own start-up then reuses instead of adding to the peak RSS."""
    from gateway.accounting.tokens import TokenCounter

    return TokenCounter()


@main.group()
def config() -> None:
    """Configuration tools."""


@config.command("check")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option(
    "--no-env",
    is_flag=True,
    help="Do not require the secrets the config names (api_key_env, key_env) to be set here.",
)
def config_check(file: str, no_env: bool) -> None:
    """Validate FILE (and its policy files) without serving; exit 2 if invalid."""
    loaded = load_or_exit(file, check_env=not no_env)
    cfg = loaded.config
    click.echo(
        f"{file}: OK ({len(cfg.backends)} backends, {len(cfg.models)} models, "
        f"{len(loaded.policies)} policies, {len(loaded.files)} files)"
    )


@main.command()
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="sim.yaml; without it, a small two-tier deployment.",
)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--time-scale", type=float, default=None, help="Override time_scale.")
def sim(config_path: str | None, host: str, port: int, time_scale: float | None) -> None:
    """Run the simulated GPU inference server (OpenAI-compatible, vLLM metrics)."""
    from importlib.resources import files

    import uvicorn

    from gateway.accounting.tokens import TokenCounter
    from gateway.config.yamlmarks import YamlProblem, load_yaml
    from gateway.sim.config import SimConfig
    from gateway.sim.server import SimServer

    configure_logging(json_lines=False)
    path = config_path or str(files("gateway") / "defaults" / "sim.yaml")
    try:
        located = load_yaml(Path(path).read_text(encoding="utf-8"), path)
        sim_config = SimConfig.model_validate_json(orjson.dumps(located.data))
    except (OSError, YamlProblem, ValueError) as exc:
        click.echo(f"{path}: {exc}", err=True)
        sys.exit(2)
    if time_scale is not None:
        sim_config = sim_config.model_copy(update={"time_scale": time_scale})
    server = SimServer(sim_config, TokenCounter())
    click.echo(
        f"tollgate sim: {', '.join(m.name for m in sim_config.models)} on "
        f"http://{host}:{port}/v1 (time_scale {sim_config.time_scale:g})",
        err=True,
    )
    uvicorn.run(
        server.app,
        host=host,
        port=port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
    )


def _check_open_access(mode: str, host: str, demo: bool) -> None:
    """`auth.mode: open` accepts any key: loopback only unless `--demo` says otherwise, and
    said loudly."""
    if mode != "open":
        return
    if not demo and not _is_loopback(host):
        fail(
            f"auth.mode 'open' accepts any key, so it only binds to loopback; refusing "
            f"--host {host} (a demo reachable from elsewhere: `tollgate serve --demo`)"
        )
    log.warning(
        "*** OPEN ACCESS: this gateway accepts ANY bearer key. It serves only "
        "simulated backends on %s. Configure keys before exposing real backends. ***",
        host,
    )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


for _command in (db, keys, budgets, spend, audit, policy, prices):
    main.add_command(_command)
