"""Where the service's database lives and how it is opened.

SQLite by default: a file beside the model directory, WAL mode, every commit synced to disk, writes
taking the lock up front with BEGIN IMMEDIATE so that concurrent writers queue instead of failing.
PostgreSQL by URL (psycopg 3), so that several service processes can share one store (store.py).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine


def normalise_url(url: str) -> str:
    """Plain PostgreSQL URLs use the psycopg 3 driver."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def default_url(model_dir: str | os.PathLike) -> str:
    """SQLite file beside the model directory: runs/digits -> runs/digits.service.db."""
    path = Path(model_dir).resolve()
    return f"sqlite:///{path.parent / (path.name + '.service.db')}"


def default_versions_dir(model_dir: str | os.PathLike) -> Path:
    path = Path(model_dir).resolve()
    return path.parent / (path.name + ".versions")


def _sqlite_engine(url: str, immediate: bool) -> Engine:
    engine = create_engine(url, connect_args={"timeout": 60})

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # transactions are begun below, not by the driver
        cursor = dbapi_connection.cursor()
        for pragma in ("journal_mode=WAL", "synchronous=FULL", "foreign_keys=ON", "busy_timeout=60000"):
            cursor.execute(f"PRAGMA {pragma}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Any) -> None:
        # a writer takes the write lock first, so it waits for another writer instead of failing on upgrade
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


def open_engines(url: str) -> tuple[Engine, Engine]:
    """(reading engine, writing engine) for a normalised URL: two SQLite engines, whose writer begins
    with BEGIN IMMEDIATE, or one pooled PostgreSQL engine for both."""
    if not url.startswith("sqlite"):
        engine = create_engine(url, pool_pre_ping=True)
        return engine, engine
    if url in ("sqlite://", "sqlite:///:memory:"):
        raise ValueError("the service needs a database file or server, not an in-memory SQLite database")
    return _sqlite_engine(url, False), _sqlite_engine(url, True)
