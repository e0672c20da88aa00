"""Alembic environment: migrations run on the connection `Store.migrate` hands over (which holds the
lock that keeps several starting processes from migrating at once)."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine
from sqlalchemy.engine import Connection

from lifelong.service.tables import Base


def _run(conn: Connection) -> None:
    # render_as_batch: SQLite alters tables by copying them, which batch mode does for later revisions
    context.configure(connection=conn, target_metadata=Base.metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


def main() -> None:
    config = context.config
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
    else:  # the alembic command line, with sqlalchemy.url set in its ini file
        with create_engine(config.get_main_option("sqlalchemy.url") or "").connect() as conn:
            _run(conn)


if hasattr(context, "config"):  # run by Alembic, not imported by something else (a doctest collector)
    main()
