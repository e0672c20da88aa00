"""Queued updates claimed by `lifelong worker` processes, and what happens when a worker dies.

A worker claims the oldest queued update in one transaction: the row is locked with ``FOR UPDATE
SKIP LOCKED`` (two workers never take the same one), every pending feedback example is taken, and
the worker takes a *lease*: a session-level PostgreSQL advisory lock keyed by the update id, held
on a connection the worker keeps open until the update is finished. The lease is how everyone else
knows the worker is alive: when its process dies, for whatever reason and on whichever machine, the
server closes the connection and the lock is free. `reap` (run by every worker and every replica)
finds running updates whose lease is free, removes whatever files the dead worker left and queues
the update again (its feedback back in the pending pool) or, after `max_attempts` starts, fails it.
A candidate is promoted only by the worker's own `finish_update`, one transaction that checks the
update is still its own: a worker declared dead can never promote anything.

Updates still run one at a time across the whole service (each starts from the current version,
which the one before may have changed); more workers give availability, not parallel updates.

On SQLite (one machine) there are no advisory locks: a worker is dead when its process is.
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy import update as sql_update
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from lifelong.service.store import _LOCK_KEY, _WAITING, Store
from lifelong.service.tables import RUNNING, Feedback, ServiceState, Update, utcnow

LEASE_SPACE = 0x11FE  # the first key of the two-key advisory locks that are leases: (LEASE_SPACE, update id)
WORKER = "worker "  # the owner of an update a worker runs: "worker HOST:PID:TOKEN"


def worker_owner() -> str:
    return f"{WORKER}{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


@dataclass
class Lease:
    """A claimed update's lease: the connection that holds its advisory lock (None on SQLite)."""

    update_id: int
    connection: Connection | None = None

    def release(self) -> None:
        if self.connection is None:
            return
        try:
            self.connection.execute(text("SELECT pg_advisory_unlock(:s, :u)"), {"s": LEASE_SPACE, "u": self.update_id})
            self.connection.commit()
        finally:
            self.connection.close()
            self.connection = None


def claim(store: Store, owner: str, path_for: Callable[[int], str]) -> tuple[Update, Lease] | None:
    """Start the oldest queued update for `owner` (none while another runs anywhere); None if there is
    nothing to start. The update takes every pending feedback example; its parent is the current version."""
    if store.sqlite:
        started = store.claim_update(owner, path_for)
        if started is None or started.status != "training":
            return None
        _count_attempt(store, started.id)
        started.attempts += 1
        return started, Lease(started.id)
    connection = store.write_engine.connect()
    update: Update | None = None
    try:
        with Session(bind=connection, expire_on_commit=False) as s, s.begin():
            s.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK_KEY})  # one decision at a time
            if s.scalar(select(Update.id).where(Update.status.in_(RUNNING))) is None:
                update = s.scalar(select(Update).where(Update.status == "queued").order_by(Update.id).limit(1)
                                  .with_for_update(skip_locked=True))
            if update is not None:
                # the lease: a session lock, so it outlives this transaction and dies with the connection
                s.execute(text("SELECT pg_advisory_lock(:s, :u)"), {"s": LEASE_SPACE, "u": update.id})
                state = s.get(ServiceState, 1)
                assert state is not None
                update.status, update.owner, update.started_at = "training", owner, utcnow()
                update.parent_version, update.candidate_path = state.current_version, path_for(update.id)
                update.attempts = (update.attempts or 0) + 1
                taken = s.execute(sql_update(Feedback).where(_WAITING).values(update_id=update.id))
                if not taken.rowcount:  # type: ignore[attr-defined]
                    update.status, update.finished_at, update.error = "failed", utcnow(), "no pending feedback"
                Store.audit(s, "update.claim", f"update {update.id}", actor=owner,
                            detail={"attempt": update.attempts})
    except BaseException:
        connection.close()
        raise
    if update is None:
        connection.close()
        return None
    lease = Lease(update.id, connection)
    if update.status != "training":
        lease.release()
        return None
    return update, lease


def _count_attempt(store: Store, update_id: int) -> None:
    with store.write() as s:
        s.execute(sql_update(Update).where(Update.id == update_id).values(attempts=Update.attempts + 1))


def _pid_dead(owner: str) -> bool:
    """SQLite: a worker of this machine whose process is gone."""
    from lifelong.service.runtime import pid_alive

    host, _, rest = owner.removeprefix(WORKER).partition(":")
    pid = rest.partition(":")[0]
    return host == socket.gethostname() and pid.isdigit() and not pid_alive(int(pid))


def abandoned(store: Store, update: Update) -> bool:
    """Whether the worker running `update` is gone (its lease is free)."""
    if not (update.owner or "").startswith(WORKER):
        return False  # run by a serving process: its own recovery handles it
    if store.sqlite:
        return _pid_dead(update.owner or "")
    with store.write_engine.connect() as c:
        free = bool(c.execute(text("SELECT pg_try_advisory_lock(:s, :u)"),
                              {"s": LEASE_SPACE, "u": update.id}).scalar())
        if free:
            c.execute(text("SELECT pg_advisory_unlock(:s, :u)"), {"s": LEASE_SPACE, "u": update.id})
        c.commit()
    return free


def retry_or_fail(store: Store, update_id: int, owner: str, max_attempts: int) -> tuple[str, str | None] | None:
    """An update whose worker died: queued again (its feedback back in the pool) while it has been started
    fewer than `max_attempts` times, else failed. Returns (new status, the candidate directory to remove),
    or None when it is no longer that worker's (finished, or already handled)."""
    with store.write(serial=True) as s:
        update = s.get(Update, update_id)
        if update is None or update.status not in RUNNING or update.owner != owner:
            return None
        path = update.candidate_path
        s.execute(sql_update(Feedback).where(Feedback.update_id == update_id).values(update_id=None))
        why = f"the worker running it stopped ({owner}, attempt {update.attempts} of {max_attempts})"
        if update.attempts < max_attempts:
            update.status, update.owner, update.started_at = "queued", None, None
            update.parent_version, update.candidate_path = None, None
            Store.audit(s, "update.retry", f"update {update_id}", actor="service", detail={"reason": why})
        else:
            update.status, update.finished_at, update.error = "failed", utcnow(), why
            Store.audit(s, "update.failed", f"update {update_id}", actor="service", detail={"error": why})
        return update.status, path


def reap(store: Store, remove: Callable[[str], Any], max_attempts: int = 2) -> list[tuple[int, str]]:
    """Queue again or fail every update whose worker is gone; `remove(path)` deletes a candidate's files.
    Returns (update id, new status) of each."""
    done = []
    for update in store.updates(RUNNING):
        if not abandoned(store, update):
            continue
        outcome = retry_or_fail(store, update.id, update.owner or "", max_attempts)
        if outcome is None:
            continue
        status, path = outcome
        if path:
            remove(path)
        done.append((update.id, status))
    return done


def queued_count(store: Store) -> int:
    with store.read() as s:
        return int(s.scalar(select(func.count()).select_from(Update).where(Update.status == "queued")) or 0)
