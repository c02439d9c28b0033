"""Checks between sections of a schema-valid config: every name a section uses exists, every
target has a price, secrets are in the environment, open access is safe, and the config
serves something. A reference is never a silent no-op: what names nothing is an error.

Items the schema check set aside (lenient.py) still count as existing, so one typo in a
backend is reported once, not again at every model that uses it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from gateway.call import Target
from gateway.config.accounting_schema import BudgetConfig, RateLimitConfig
from gateway.config.fleet import fleet_secrets
from gateway.config.lenient import Loc, SetAside
from gateway.config.models_schema import SHORT_TIER, ModelConfig, ReferenceConfig, ReplicaConfig
from gateway.config.plugins import StrategyLoadError, comparator
from gateway.config.plugins import strategy as resolve
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
        problems += _webhook_urls(main, config, env)
        problems += fleet_secrets(main, config, env)
    problems += _open_access(main, config)
    problems += _caches(main, config, aside)
    return problems


def _caches(main: Located, config: Config, aside: SetAside) -> list[str]:
    """A semantic cache's embedding model is an alias that serves embeddings; its checks'
    comparator exists."""
    problems = []
    for alias, model in config.models.items():
        semantic = model.cache.semantic if model.cache is not None else None
        if semantic is None:
            continue
        at: Loc = ("models", alias, "cache", "semantic")
        name = semantic.embedding_model
        if name not in config.models and name not in aside.named("models"):
            problems.append(_problem(main, (*at, "embedding_model"),
                            f"no model alias named {name!r} serves the embeddings"))  # fmt: skip
        elif name == alias:
            why = "the alias cannot embed its own questions: name an embedding model"
            problems.append(_problem(main, (*at, "embedding_model"), why))
        try:
            comparator(semantic.verify.compare)
        except (ImportError, LookupError, ValueError) as err:
            problems.append(_problem(main, (*at, "verify", "compare"), str(err)))
    return problems


def _problem(located: Located, loc: Loc, why: str) -> str:
    return f"{located.where(loc)}: {dotted(loc)}: {why}"


def _serves_something(main: Located, config: Config, aside: SetAside) -> list[str]:
    if config.models or aside.named("models"):
        return []
    return [
        f"{main.where(())}: models: no model alias is defined, so the gateway would serve "
        "nothing (add `models: {ALIAS: {backend: NAME, model: UPSTREAM}}`)"
    ]


def replica_locs(alias: str, model: ModelConfig) -> list[tuple[Loc, str, ReplicaConfig]]:
    """Every replica of an alias, its tier, and where it is written (the short form: the
    alias itself)."""
    if not model.tiers:
        short = model.resolved_tiers()[SHORT_TIER]
        return [(("models", alias), SHORT_TIER, short.replicas[0])]
    out: list[tuple[Loc, str, ReplicaConfig]] = []
    for name, tier in model.tiers.items():
        at: Loc = ("models", alias, "tiers", name)
        replicas = tier if isinstance(tier, tuple) else tier.replicas
        if not isinstance(tier, tuple):
            at = (*at, "replicas")
        out += [((*at, i), name, replica) for i, replica in enumerate(replicas)]
    return out


def _targets(main: Located, config: Config, aside: SetAside) -> list[str]:
    """Replicas, references and fallbacks name backends, aliases and strategies that exist."""
    problems = []
    backends = set(config.backends) | aside.named("backends")
    aliases = set(config.models) | aside.named("models")
    known = ", ".join(sorted(backends)) or "none defined"
    for alias, model in config.models.items():
        for loc, _, replica in replica_locs(alias, model):
            if replica.backend not in backends:
                problems.append(
                    _problem(
                        main,
                        (*loc, "backend"),
                        f"unknown backend {replica.backend!r} (backends: {known})",
                    )
                )
        reference = model.reference
        if isinstance(reference, ReferenceConfig) and reference.backend not in backends:
            loc = ("models", alias, "reference", "backend")
            why = f"unknown backend {reference.backend!r} (backends: {known})"
            problems.append(_problem(main, loc, why))
        for i, step in enumerate(model.fallback_steps()):
            if step.alias is not None and step.alias not in aliases:
                tiers = ", ".join(model.resolved_tiers())
                why = f"{step.alias!r} is neither a tier of this model ({tiers}) nor a model alias"
                problems.append(_problem(main, ("models", alias, "fallbacks", i), why))
            elif step.alias == alias:
                why = "an alias cannot fall back to itself (name one of its tiers instead)"
                problems.append(_problem(main, ("models", alias, "fallbacks", i), why))
            elif step.tier is not None and step.tier not in model.resolved_tiers():
                why = f"{step.tier!r} is not a tier of this model"
                problems.append(_problem(main, ("models", alias, "fallbacks", i), why))
        problems += _strategies(main, alias, model)
    return problems


def _strategies(main: Located, alias: str, model: ModelConfig) -> list[str]:
    problems = []
    named: list[tuple[Loc, str]] = [(("models", alias, "strategy"), model.strategy)]
    named += [
        (("models", alias, "tiers", name, "strategy"), tier.strategy)
        for name, tier in model.tiers.items()
        if not isinstance(tier, tuple) and tier.strategy is not None
    ]
    for loc, name in named:
        try:
            resolve(name)
        except StrategyLoadError as exc:
            problems.append(_problem(main, loc, str(exc)))
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


def _webhook_urls(main: Located, config: Config, env: Mapping[str, str]) -> list[str]:
    problems = []
    for i, hook in enumerate(config.limits.alerts.webhooks):
        if hook.url_env is not None and not env.get(hook.url_env):
            loc = ("limits", "alerts", "webhooks", i, "url_env")
            problems.append(_problem(main, loc, f"environment variable {hook.url_env} is not set"))
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
    """Every replica and explicit reference has a price (or is marked free)."""
    problems = []
    table = price_table(config)
    for alias, model in config.models.items():
        priced: list[tuple[Loc, Target]] = [
            (loc, Target(r.backend, r.model, tier)) for loc, tier, r in replica_locs(alias, model)
        ]
        if isinstance(model.reference, ReferenceConfig):
            ref = model.reference
            priced.append((("models", alias, "reference"), Target(ref.backend, ref.model)))
        for loc, target in priced:
            if target.backend in config.backends and table.unpriced([target]):
                problems.append(
                    _problem(
                        main,
                        loc,
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


def budget_alerts(
    located: Located,
    budgets: Sequence[BudgetConfig],
    webhooks: set[str],
    aside: SetAside,
    at: Loc,
) -> list[str]:
    """A budget's `notify` names webhooks that exist; alerting without any webhook would only
    log, which is not what someone who set thresholds meant."""
    problems = []
    for i, budget in enumerate(budgets):
        loc = aside.original((*at, i))
        for name in budget.notify or ():
            if name not in webhooks:
                known = ", ".join(sorted(webhooks)) or "none"
                why = f"unknown webhook {name!r} (limits.alerts.webhooks: {known})"
                problems.append(_problem(located, (*loc, "notify"), why))
        if budget.alert_at and not webhooks:
            why = "alert thresholds need a receiver: add limits.alerts.webhooks"
            problems.append(_problem(located, (*loc, "alert_at"), why))
    return problems
