"""What a gateway shares with a fleet, and the secrets every member must then hold in common.

A gateway alone generates its server secret into its data directory. Several gateways on one
database or one Redis must not: each would generate its own, so a key created through one
gateway is refused by the next, and `tollgate audit verify` reports rows another gateway signed
as forged. A gateway that shares state therefore refuses to start without the secret set.
"""

from __future__ import annotations

from collections.abc import Mapping

from gateway.config.schema import Config
from gateway.config.yamlmarks import Located, dotted

DATABASE_ENV = "TOLLGATE_DATABASE_URL"


def shared_state(config: Config, env: Mapping[str, str]) -> list[str]:
    """What this config keeps where other gateways can reach it; empty for a lone gateway."""
    shared = []
    url = env.get(DATABASE_ENV) or config.database.url
    if not url.startswith("sqlite"):
        shared.append("its database")
    if config.limits.store == "redis":
        shared.append("budget counters in Redis")
    if config.cache.store == "redis":
        shared.append("the response cache in Redis")
    if config.routing.prefix_aware.share is not None:
        shared.append("the prefix index in Redis")
    return shared


def missing_secret(config: Config, env: Mapping[str, str]) -> str | None:
    """Why this process needs the fleet's server secret and lacks it; None if all is well."""
    shared = shared_state(config, env)
    secret = config.keys.secret_env
    if not shared or env.get(secret):
        return None
    return (
        f"environment variable {secret} is not set, and this gateway shares "
        f"{_listed(shared)} with a fleet: every gateway needs the same server secret (without "
        "it each would make its own, so keys created through one would be refused by another "
        "and audit signatures would not verify)"
    )


def fleet_secrets(main: Located, config: Config, env: Mapping[str, str]) -> list[str]:
    """The server secret is set when state is shared; a named audit signing key is always set."""
    problems = []
    why = missing_secret(config, env)
    if why is not None:
        loc = ("keys", "secret_env")
        problems.append(f"{main.where(loc)}: {dotted(loc)}: {why}")
    signing = config.audit.signing_key_env
    if config.audit.enabled and signing is not None and not env.get(signing):
        loc = ("audit", "signing_key_env")
        problems.append(
            f"{main.where(loc)}: {dotted(loc)}: environment variable {signing} is not set "
            "(the audit log's signing key; every gateway of a fleet needs the same one)"
        )
    return problems


def _listed(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]
