"""Checks between sections of a schema-valid config: every name a section uses exists, every
target has a price, secrets are in the environment, open access is safe, and the config
serves something. A reference is never a silent no-op: what names nothing is an error.

Items the schema check set aside (lenient.py) still count as existing, so one typo in a
backend is reported once, not again at every model that uses it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from gateway.call import Target
from gateway.config.accounting_schema import RateLimitConfig
from gateway.config.lenient import Loc, SetAside
from gateway.config.prices import price_table
from gateway.config.schema import Config, SimBackend
from gateway.config.yamlmarks import Located, dotted


def check_references(
    main: Located, config: Config, aside: SetAside, env: Mapping[str, str] | None
) -> list[str]:
    """`env` None: the environment is not consulted (secrets are not checked)."""
    problems = _serves_something(main, config, aside)
    problems += _targets(main, config, aside)
    problems += _pricing_backends(main, config, aside)
    problems += _keys(main, config, aside, env)
    if env is not None:
        problems += _backend_secrets(main, config, env)
    problems += _open_access(main, config)
    return problems


def _problem(located: Located, loc: Loc, why: str) -> str:
    return f"{located.where(loc)}: {dotted(loc)}: {why}"


def _serves_something(main: Located, config: Config, aside: SetAside) -> list[str]:
    if config.models or aside.named("models"):
        return []
    return [
        f"{main.where(())}: models: no model alias is defined, so the gateway would serve "
        "nothing (add `models: {ALIAS: {targets: [{backend: NAME, model: UPSTREAM}]}}`)"
    ]


def _targets(main: Located, config: Config, aside: SetAside) -> list[str]:
    problems = []
    backends = set(config.backends) | aside.named("backends")
    known = ", ".join(sorted(backends)) or "none defined"
    for alias, model in config.models.items():
        for i, target in enumerate(model.targets):
            if target.backend not in backends:
                loc = ("models", alias, "targets", i, "backend")
                problems.append(
                    _problem(main, loc, f"unknown backend {target.backend!r} (backends: {known})")
                )
    return problems


def _pricing_backends(main: Located, config: Config, aside: SetAside) -> list[str]:
    """A price for a backend that does not exist prices nothing: a typo, not a no-op."""
    problems = []
    backends = set(config.backends) | aside.named("backends")
    for i, rule in enumerate(config.pricing):
        if rule.backend != "*" and rule.backend not in backends:
            loc = (*aside.original(("pricing", i)), "backend")
            known = ", ".join(sorted(backends)) or "none defined"
            problems.append(
                _problem(main, loc, f"unknown backend {rule.backend!r} (backends: {known})")
            )
    return problems


def _keys(
    main: Located, config: Config, aside: SetAside, env: Mapping[str, str] | None
) -> list[str]:
    problems = []
    models = set(config.models) | aside.named("models")
    first: dict[str, str] = {}
    for i, key in enumerate(config.auth.keys):
        at = aside.original(("auth", "keys", i))
        where = main.where((*at, "name"))
        if key.name in first:
            problems.append(
                _problem(
                    main, (*at, "name"), f"{key.name!r} is already defined at {first[key.name]}"
                )
            )
        first.setdefault(key.name, where)
        if env is not None and key.key_env is not None and not env.get(key.key_env):
            loc = (*at, "key_env")
            problems.append(_problem(main, loc, f"environment variable {key.key_env} is not set"))
        for alias in key.models or ():
            if alias not in models:
                problems.append(_problem(main, (*at, "models"), f"unknown model {alias!r}"))
    return problems


def _backend_secrets(main: Located, config: Config, env: Mapping[str, str]) -> list[str]:
    problems = []
    for name, backend in config.backends.items():
        if (
            not isinstance(backend, SimBackend)
            and backend.api_key_env is not None
            and backend.api_key_env not in env
        ):
            loc = ("backends", name, "api_key_env")
            problems.append(
                _problem(main, loc, f"environment variable {backend.api_key_env} is not set")
            )
    return problems


def _open_access(main: Located, config: Config) -> list[str]:
    if config.auth.mode != "open":
        return []
    real = [n for n, b in config.backends.items() if not isinstance(b, SimBackend)]
    if not real:
        return []
    return [
        f"{main.where(('auth', 'mode'))}: auth.mode: 'open' is only allowed when every "
        f"backend is simulated (real backends: {', '.join(real)})"
    ]


def check_money(main: Located, config: Config) -> list[str]:
    """Every target has a price (or is marked free)."""
    problems = []
    table = price_table(config)
    for alias, model in config.models.items():
        for i, target in enumerate(model.targets):
            known = target.backend in config.backends
            if known and table.unpriced([Target(target.backend, target.model)]):
                problems.append(
                    _problem(
                        main,
                        ("models", alias, "targets", i),
                        f"no price for backend {target.backend!r} model {target.model!r}: "
                        "add a `pricing:` entry (or mark it `free: true`)",
                    )
                )
    return problems


def rate_models(
    located: Located,
    rates: Sequence[RateLimitConfig],
    models: set[str],
    aside: SetAside,
    at: Loc,
) -> list[str]:
    """Rate limits that name a model (by `model`, or as the subject of a `model` scope) must
    name one that exists."""
    problems = []
    for i, rate in enumerate(rates):
        for field, value in (("model", rate.model), ("subject", rate.subject)):
            if field == "subject" and rate.scope != "model":
                continue
            if value not in (None, "*") and value not in models:
                loc = (*aside.original((*at, i)), field)
                problems.append(_problem(located, loc, f"unknown model {value!r}"))
    return problems
