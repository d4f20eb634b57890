"""Alembic environment of the recordings catalog. It runs only programmatically: Catalog.open hands it a
connection (config.attributes["connection"]) inside its transaction; there is no alembic.ini."""

from __future__ import annotations

from alembic import context

from mediaserver.record.catalog import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("the catalog migrations run from mediaserver.record.catalog.Catalog.open, "
                       "which passes the connection; there is no alembic.ini")
# render_as_batch: SQLite alters a table by copying it, which later revisions will need.
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
