"""Provides Alembic's environment: migrations run on the connection the server hands in."""

from __future__ import annotations

from alembic import context

from server_client.server.db import metadata

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - the server always passes its connection
    raise RuntimeError("run migrations through server_client.server.db.migrate()")

context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
