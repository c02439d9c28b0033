"""tollgate.yaml (+ policy files) -> a validated, cross-checked config, or every problem found.

This is the one function both `tollgate config check`, `serve` and hot reload call.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ValidationError

from gateway.config.accounting_schema import BudgetConfig, RateLimitConfig
from gateway.config.lenient import SetAside, validate_leniently
from gateway.config.plugins import PluginLoadError, PolicyView
from gateway.config.plugins import policy as resolve
from gateway.config.references import budget_alerts, check_money, check_references, rate_models
from gateway.config.schema import Config, PolicyConfig, PolicyFile
from gateway.config.yamlmarks import Located, YamlProblem, dotted, load_yaml
from gateway.errors import ConfigError

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


def load_config(
    path: str | os.PathLike[str],
    env: Mapping[str, str] | None = None,
    *,
    check_env: bool = True,
    policy_files: Sequence[str] | None = None,
) -> LoadedConfig:
    """Validates everything; a ConfigError lists each problem as `file:line:col: path: why`,
    all of them at once (an invalid section is reported and set aside, and the rest is still
    checked). `check_env=False` skips the checks that secrets are in the environment (admin
    commands and `config check --no-env` need the config, not every upstream's key).
    `policy_files` replaces the config's own (`tollgate policy check FILES`)."""
    environ = os.environ if env is None else env
    file = str(path)
    main = _parse(file, environ)
    config, problems, aside = validate_leniently(main, Config, _problem)
    if config is None:
        raise ConfigError(problems)
    if policy_files is not None:
        paths = tuple(str(Path(p).resolve()) for p in policy_files)
        config = config.model_copy(update={"policy_files": paths})
    files = [file]
    entries: list[tuple[Located, tuple[str | int, ...], PolicyConfig]] = [
        (main, aside.original(("policies", i)), p) for i, p in enumerate(config.policies)
    ]
    limits = _Limits(config, main, aside)
    problems.extend(limits.problems)
    for policy_path, located, policy_file, file_aside in _policy_files(
        main, config, aside, environ, problems
    ):
        files.append(policy_path)
        entries.extend(
            (located, file_aside.original(("policies", j)), p)
            for j, p in enumerate(policy_file.policies)
        )
        problems.extend(limits.add(located, policy_file, file_aside))
    specs: list[PolicySpec] = []
    view = _view(config, limits)
    for located, at, policy in entries:
        try:
            spec = _policy_spec(located, at, policy)
        except ConfigError as exc:
            problems.extend(exc.problems)
            continue
        specs.append(spec)
        check = getattr(spec.plugin_cls, "references", None)
        if check is not None:
            for loc, why in check(spec.options, view):
                where = (*at, "with", *loc)
                problems.append(f"{located.where(where)}: {dotted(where)}: {why}")
    problems.extend(check_references(main, config, aside, environ if check_env else None))
    if not aside.touched("pricing") and not aside.touched("backends"):
        problems.extend(check_money(main, config))
    if problems:
        raise ConfigError(problems)
    return LoadedConfig(limits.merged(config), tuple(specs), tuple(files), file)


def _view(config: Config, limits: _Limits) -> PolicyView:
    """What policy options may name: each alias's tiers, every YAML budget."""
    tiers = {a: frozenset(m.resolved_tiers()) for a, m in config.models.items()}
    names = {b.name for b in (*config.limits.budgets, *limits.budgets)}
    references = {
        a: r if isinstance(r := m.reference_tier(), str) else None for a, m in config.models.items()
    }
    return PolicyView(tiers, frozenset(names), references)


def policy_file_paths(source: str, patterns: Sequence[str]) -> list[str]:
    """The files `policy_files` matches now, in load order (re-globbed by the reloader)."""
    base_dir = Path(source).parent
    return [path for pattern in patterns for path in sorted(glob.glob(str(base_dir / pattern)))]


def _policy_files(
    main: Located,
    config: Config,
    aside: SetAside,
    env: Mapping[str, str],
    problems: list[str],
) -> Iterator[tuple[str, Located, PolicyFile, SetAside]]:
    base_dir = Path(main.file).parent
    for i, pattern in enumerate(config.policy_files):
        matched = sorted(glob.glob(str(base_dir / pattern)))
        if not matched:
            loc = aside.original(("policy_files", i))
            problems.append(f"{main.where(loc)}: {dotted(loc)}: no file matches {pattern!r}")
        for policy_path in matched:
            try:
                located = _parse(policy_path, env)
            except ConfigError as exc:
                problems.extend(exc.problems)
                continue
            policy_file, found, file_aside = validate_leniently(located, PolicyFile, _problem)
            problems.extend(found)
            if policy_file is not None:
                yield policy_path, located, policy_file, file_aside


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
        problems = [_problem(located, (*at, *err["loc"]), err) for err in exc.errors()]
        raise ConfigError(problems) from exc


def _problem(located: Located, at: tuple[str | int, ...], err: Any) -> str:
    loc = located.real_path(at)
    path = dotted(loc)
    message = err["msg"]
    if err["type"] == "extra_forbidden":
        message = "unknown key (not allowed here)"
    elif err["type"] == "missing":
        message = "required key is missing"
    at_key = err["type"] == "extra_forbidden"
    return f"{located.where(loc, at_key=at_key)}: {path or '<root>'}: {message}"


def _policy_spec(located: Located, at: tuple[str | int, ...], policy: PolicyConfig) -> PolicySpec:
    try:
        cls = resolve(policy.use)
    except PluginLoadError as exc:
        where = located.where((*at, "use"))
        raise ConfigError([f"{where}: {dotted((*at, 'use'))}: {exc}"]) from exc
    options_located = Located(located.file, policy.options, located.marks, located.key_marks)
    options = _validate(options_located, cls.Options, (*at, "with"))
    return PolicySpec(cls, options, f"{policy.use}", policy.mode == "shadow")


class _Limits:
    """Budgets and rate limits gathered from every file; a name used twice names both places."""

    def __init__(self, config: Config, main: Located, aside: SetAside) -> None:
        self._models = set(config.models) | aside.named("models")
        self._first: dict[str, dict[str, str]] = {"budgets": {}, "rate_limits": {}}
        self.budgets: list[BudgetConfig] = []
        self.rates: list[RateLimitConfig] = []
        self.problems: list[str] = []
        for section, items in (
            ("budgets", config.limits.budgets),
            ("rate_limits", config.limits.rate_limits),
        ):
            locs = [aside.original(("limits", section, j)) for j in range(len(items))]
            self.problems += self._unique(main, section, [i.name for i in items], locs)
        self.problems += rate_models(
            main, config.limits.rate_limits, self._models, aside, ("limits", "rate_limits")
        )
        alerts = config.limits.alerts
        self._webhooks = {w.name for w in alerts.webhooks}
        self.problems += budget_alerts(
            main, config.limits.budgets, self._webhooks, aside, ("limits", "budgets")
        )
        if alerts.default_alert_at and not self._webhooks:
            where = main.where(("limits", "alerts", "default_alert_at"))
            self.problems.append(
                f"{where}: limits.alerts.default_alert_at: alert thresholds need a receiver: "
                "add limits.alerts.webhooks"
            )

    def add(self, located: Located, policy_file: PolicyFile, aside: SetAside) -> list[str]:
        problems = []
        for section, items in (
            ("budgets", policy_file.budgets),
            ("rate_limits", policy_file.rate_limits),
        ):
            locs = [aside.original((section, j)) for j in range(len(items))]
            problems += self._unique(located, section, [i.name for i in items], locs)
        problems += rate_models(
            located, policy_file.rate_limits, self._models, aside, ("rate_limits",)
        )
        problems += budget_alerts(located, policy_file.budgets, self._webhooks, aside, ("budgets",))
        self.budgets.extend(policy_file.budgets)
        self.rates.extend(policy_file.rate_limits)
        return problems

    def _unique(
        self,
        located: Located,
        section: str,
        names: list[str],
        locs: list[tuple[str | int, ...]],
    ) -> list[str]:
        problems = []
        first = self._first[section]
        for name, loc in zip(names, locs, strict=True):
            where = located.where((*loc, "name"))
            if name in first:
                problems.append(
                    f"{where}: {dotted((*loc, 'name'))}: {name!r} is already defined at "
                    f"{first[name]}"
                )
            else:
                first[name] = where
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
