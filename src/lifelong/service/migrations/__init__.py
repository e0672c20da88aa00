"""Alembic migrations of the service store (env.py and versions/); applied by `Store.migrate`."""
