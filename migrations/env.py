"""Alembic environment: gateway.stores.migrate hands over the engine (no URL in an ini file).

Every table module is imported so `target_metadata` holds the whole schema: `alembic check`
and autogenerate then compare against all of it (without them they would propose dropping the
audit and rollup tables)."""

from __future__ import annotations

from alembic import context

from gateway.stores.migrate import env_metadata

metadata = env_metadata()
engine = context.config.attributes["engine"]
with engine.begin() as connection:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    context.run_migrations()
