"""Alembic environment: run migrations on the engine Carryover hands over."""

from alembic import context

engine = context.config.attributes["engine"]

with engine.begin() as connection:
    context.configure(connection=connection, render_as_batch=True)
    context.run_migrations()
