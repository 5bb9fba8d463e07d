"""Alembic environment: runs on the connection `whiteboard.store.migrate` hands it.

Migrations are always run through `whiteboard db upgrade` (or on server start), which opens an
async engine and passes a sync connection in `config.attributes["connection"]`.
"""

from __future__ import annotations

from alembic import context

from whiteboard.store.tables import metadata

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - only reached by running `alembic` by hand
    raise SystemExit("run migrations with `whiteboard db upgrade`")

context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
