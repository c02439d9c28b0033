"""tollgate.yaml (+ policy files) -> a validated, cross-checked config, or every problem found.

This is the one function both `tollgate config check`, `serve` and hot reload call.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ValidationError

from gateway.call import Target
from gateway.config.accounting_schema import BudgetConfig, RateLimitConfig
from gateway.config.prices import price_table
from gateway.config.schema import Config, PolicyConfig, PolicyFile, SimBackend
from gateway.config.yamlmarks import Located, YamlProblem, load_yaml
from gateway.errors import ConfigError
from gateway.policies.registry import PluginLoadError, resolve

M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True, slots=True)
class PolicySpec:
    """A policy entry resolved to its plugin class and validated options, ready to build."""

    plugin_cls: type[Any]
    options: BaseModel
    label: str
    shadow: bool


@dataclass(frozen=True, slots=True)
class LoadedConfig:
    config: Config
    policies: tuple[PolicySpec, ...]
    files: tuple[str, ...]
    source: str


def load_config(path: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> LoadedConfig:
    """Validates everything; a ConfigError lists each problem as `file:line:col: path: why`."""
    environ = os.environ if env is None else env
    file = str(path)
    main = _parse(file, environ)
    config = _validate(main, Config, ())
    problems: list[str] = []
    files = [file]
    entries: list[tuple[Located, tuple[str | int, ...], PolicyConfig]] = [
        (main, ("policies", i), p) for i, p in enumerate(config.policies)
    ]
    limits = _Limits(config)
    base_dir = Path(file).parent
    for i, pattern in enumerate(config.policy_files):
        matched = sorted(glob.glob(str(base_dir / pattern)))
        if not matched:
            problems.append(
                f"{main.where(('policy_files', i))}: policy_files[{i}]: no file matches {pattern!r}"
            )
        for policy_path in matched:
            try:
                located = _parse(policy_path, environ)
                policy_file = _validate(located, PolicyFile, ())
            except ConfigError as exc:
                problems.extend(exc.problems)
                continue
            files.append(policy_path)
            entries.extend(
                (located, ("policies", j), p) for j, p in enumerate(policy_file.policies)
            )
            problems.extend(limits.add(located, policy_file))
    specs: list[PolicySpec] = []
    for located, at, policy in entries:
        try:
            specs.append(_policy_spec(located, at, policy))
        except ConfigError as exc:
            problems.extend(exc.problems)
    problems.extend(_cross_check(main, config, environ))
    problems.extend(_check_money(main, config))
    if problems:
        raise ConfigError(problems)
    return LoadedConfig(limits.merged(config), tuple(specs), tuple(files), file)


def _parse(file: str, env: Mapping[str, str]) -> Located:
    try:
        text = Path(file).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{file}: cannot read: {exc.strerror or exc}"]) from exc
    try:
        return load_yaml(text, file, env)
    except YamlProblem as exc:
        raise ConfigError([str(exc)]) from exc


def _validate(located: Located, model: type[M], at: tuple[str | int, ...]) -> M:
    data = located.data if located.data is not None else {}
    try:
        return model.model_validate_json(orjson.dumps(data, default=str))
    except ValidationError as exc:
        raise ConfigError([_problem(located, at, err) for err in exc.errors()]) from exc


def _problem(located: Located, at: tuple[str | int, ...], err: Any) -> str:
    loc = located.real_path((*at, *err["loc"]))
    path = _dotted(loc)
    message = err["msg"]
    if err["type"] == "extra_forbidden":
        message = "unknown key (not allowed here)"
    elif err["type"] == "missing":
        message = "required key is missing"
    at_key = err["type"] == "extra_forbidden"
    return f"{located.where(loc, at_key=at_key)}: {path or '<root>'}: {message}"


def _dotted(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _policy_spec(located: Located, at: tuple[str | int, ...], policy: PolicyConfig) -> PolicySpec:
    try:
        cls = resolve(policy.use)
    except PluginLoadError as exc:
        where = located.where((*at, "use"))
        raise ConfigError([f"{where}: {_dotted((*at, 'use'))}: {exc}"]) from exc
    options_located = Located(located.file, policy.options, located.marks, located.key_marks)
    options = _validate(options_located, cls.Options, (*at, "with"))
    return PolicySpec(cls, options, f"{policy.use}", policy.mode == "shadow")


def _cross_check(main: Located, config: Config, env: Mapping[str, str]) -> list[str]:
    """References between sections: targets name real backends, secrets exist, auth mode is safe."""
    problems: list[str] = []
    loc: tuple[str | int, ...]
    for alias, model in config.models.items():
        for i, target in enumerate(model.targets):
            if target.backend not in config.backends:
                loc = ("models", alias, "targets", i, "backend")
                known = ", ".join(sorted(config.backends)) or "none defined"
                problems.append(
                    f"{main.where(loc)}: {_dotted(loc)}: unknown backend "
                    f"{target.backend!r} (backends: {known})"
                )
    for name, backend in config.backends.items():
        if (
            not isinstance(backend, SimBackend)
            and backend.api_key_env is not None
            and backend.api_key_env not in env
        ):
            loc = ("backends", name, "api_key_env")
            problems.append(
                f"{main.where(loc)}: {_dotted(loc)}: environment variable "
                f"{backend.api_key_env} is not set"
            )
    for i, key in enumerate(config.auth.keys):
        if key.key_env is not None and not env.get(key.key_env):
            loc = ("auth", "keys", i, "key_env")
            problems.append(
                f"{main.where(loc)}: {_dotted(loc)}: environment variable {key.key_env} is not set"
            )
        for alias in key.models or ():
            if alias not in config.models:
                loc = ("auth", "keys", i, "models")
                problems.append(f"{main.where(loc)}: {_dotted(loc)}: unknown model {alias!r}")
    if config.auth.mode == "open":
        real = [n for n, b in config.backends.items() if not isinstance(b, SimBackend)]
        if real:
            loc = ("auth", "mode")
            problems.append(
                f"{main.where(loc)}: auth.mode: 'open' is only allowed when every "
                f"backend is simulated (real backends: {', '.join(real)})"
            )
    return problems


def _check_money(main: Located, config: Config) -> list[str]:
    """Every target has a price (or is marked free); limits name models that exist."""
    problems: list[str] = []
    loc: tuple[str | int, ...]
    table = price_table(config)
    for alias, model in config.models.items():
        for i, target in enumerate(model.targets):
            known = target.backend in config.backends
            if known and table.unpriced([Target(target.backend, target.model)]):
                loc = ("models", alias, "targets", i)
                problems.append(
                    f"{main.where(loc)}: {_dotted(loc)}: no price for backend "
                    f"{target.backend!r} model {target.model!r}: add a `pricing:` entry "
                    "(or mark it `free: true`)"
                )
    problems += _rate_models(
        main, ("limits", "rate_limits"), config.limits.rate_limits, set(config.models)
    )
    return problems


def _rate_models(
    located: Located,
    at: tuple[str | int, ...],
    rates: Sequence[RateLimitConfig],
    models: set[str],
) -> list[str]:
    """Rate limits that name a model (by `model`, or as the subject of a `model` scope) must
    name one that exists."""
    problems = []
    for i, rate in enumerate(rates):
        for field, value in (("model", rate.model), ("subject", rate.subject)):
            if field == "subject" and rate.scope != "model":
                continue
            if value not in (None, "*") and value not in models:
                loc = (*at, i, field)
                problems.append(f"{located.where(loc)}: {_dotted(loc)}: unknown model {value!r}")
    return problems


class _Limits:
    """Budgets and rate limits gathered from policy files, checked where they are written."""

    def __init__(self, config: Config) -> None:
        self._models = set(config.models)
        self._names = {
            "budgets": {b.name for b in config.limits.budgets},
            "rate_limits": {r.name for r in config.limits.rate_limits},
        }
        self.budgets: list[BudgetConfig] = []
        self.rates: list[RateLimitConfig] = []

    def add(self, located: Located, policy_file: PolicyFile) -> list[str]:
        problems = self._unique(located, "budgets", [b.name for b in policy_file.budgets])
        problems += self._unique(located, "rate_limits", [r.name for r in policy_file.rate_limits])
        problems += _rate_models(located, ("rate_limits",), policy_file.rate_limits, self._models)
        self.budgets.extend(policy_file.budgets)
        self.rates.extend(policy_file.rate_limits)
        return problems

    def _unique(self, located: Located, section: str, names: list[str]) -> list[str]:
        problems = []
        for j, name in enumerate(names):
            if name in self._names[section]:
                loc: tuple[str | int, ...] = (section, j, "name")
                problems.append(
                    f"{located.where(loc)}: {_dotted(loc)}: {name!r} is already defined"
                )
            self._names[section].add(name)
        return problems

    def merged(self, config: Config) -> Config:
        if not self.budgets and not self.rates:
            return config
        limits = config.limits.model_copy(
            update={
                "budgets": (*config.limits.budgets, *self.budgets),
                "rate_limits": (*config.limits.rate_limits, *self.rates),
            }
        )
        return config.model_copy(update={"limits": limits})
