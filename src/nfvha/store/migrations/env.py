"""Alembic's entry: run by nfvha.store.db on the connection it is given (SQLite or PostgreSQL)."""

from alembic import context

from nfvha.store.models import Base

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=Base.metadata,
                  render_as_batch=connection.dialect.name == "sqlite")  # SQLite alters tables by copying
with context.begin_transaction():
    context.run_migrations()
