"""Alembic environment: gateway.stores.migrate hands over the engine (no URL in an ini file)."""

from __future__ import annotations

from alembic import context

from gateway.stores.sql import metadata

engine = context.config.attributes["engine"]
with engine.begin() as connection:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    context.run_migrations()
