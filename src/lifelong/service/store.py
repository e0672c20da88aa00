"""The service's database: API keys, feedback, updates, versions, the current-version pointer, audit.

SQLAlchemy 2, SQLite by default or PostgreSQL by URL (how each is opened: database.py); on
PostgreSQL several service processes can share one store (serialised decisions take a
transaction-scoped advisory lock). The schema is created and upgraded by Alembic
migrations (migrations/), applied by `Store.migrate` at startup.

Model files never live in the database: a version row points to a saved model directory, and it
is committed only after that directory has been written and renamed into place.
"""

from __future__ import annotations

import fcntl
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy import update as sql_update
from sqlalchemy.orm import Session

from lifelong.service.database import normalise_url, open_engines
from lifelong.service.tables import (
    FEEDBACK_STATUSES,
    FINAL,
    ROLES,
    RUNNING,
    ApiKey,
    Audit,
    Feedback,
    ServiceState,
    Update,
    Version,
    utcnow,
)

_LOCK_KEY = 0x11FE10  # the advisory lock that serialises update scheduling on PostgreSQL
# feedback the next update takes: not taken by an update yet, and neither held nor rejected
_WAITING = Feedback.update_id.is_(None) & Feedback.status.in_(("pending", "approved"))
# a maintainer's decision on one example: the statuses it may come from
_DECIDE_FROM = {"approved": ("held", "rejected"), "rejected": ("held", "approved", "pending")}


class Store:
    """All database access of the service. Each method is one transaction."""

    def __init__(self, url: str):
        self.url = normalise_url(url)
        self.sqlite = self.url.startswith("sqlite")
        self.read_engine, self.write_engine = open_engines(self.url)

    def close(self) -> None:
        self.read_engine.dispose()
        self.write_engine.dispose()

    # -- sessions and schema ---------------------------------------------------------------------------
    @contextmanager
    def read(self) -> Iterator[Session]:
        with Session(self.read_engine, expire_on_commit=False) as s, s.begin():
            yield s

    @contextmanager
    def write(self, serial: bool = False) -> Iterator[Session]:
        """A write transaction, committed at the end. `serial`: also serialise against other processes
        making the same kind of decision (SQLite's BEGIN IMMEDIATE already serialises every writer)."""
        with Session(self.write_engine, expire_on_commit=False) as s, s.begin():
            if serial and not self.sqlite:
                s.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK_KEY})
            yield s

    def migrate(self) -> None:
        """Create or upgrade the schema to the newest migration (safe with several processes starting)."""
        from alembic import command
        from alembic.config import Config

        cfg = Config()
        cfg.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
        with self.write_engine.connect() as conn:
            if self.sqlite:
                lock_path = Path(self.write_engine.url.database or "store").with_suffix(".migrate.lock")
                with open(lock_path, "a") as lock:
                    fcntl.flock(lock, fcntl.LOCK_EX)
                    cfg.attributes["connection"] = conn
                    command.upgrade(cfg, "head")
            else:
                conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _LOCK_KEY + 1})
                try:
                    cfg.attributes["connection"] = conn
                    command.upgrade(cfg, "head")
                finally:
                    conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _LOCK_KEY + 1})
                    conn.commit()

    @staticmethod
    def audit(s: Session, action: str, obj: str, key_id: int | None = None, actor: str | None = None,
              detail: dict[str, Any] | None = None) -> None:
        s.add(Audit(key_id=key_id, actor=actor or (f"key {key_id}" if key_id is not None else "service"),
                    action=action, object=obj, detail=detail))

    # -- keys ------------------------------------------------------------------------------------------
    def add_key(self, role: str, key_hash: str, name: str = "", actor: str = "cli") -> int:
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}; choose one of {', '.join(ROLES)}")
        with self.write() as s:
            key = ApiKey(name=name, role=role, key_hash=key_hash)
            s.add(key)
            s.flush()
            self.audit(s, "key.add", f"key {key.id}", actor=actor, detail={"role": role, "name": name})
            return key.id

    def revoke_key(self, key_id: int, actor: str = "cli") -> bool:
        with self.write() as s:
            key = s.get(ApiKey, key_id)
            if key is None or key.revoked_at is not None:
                return False
            key.revoked_at = utcnow()
            self.audit(s, "key.revoke", f"key {key_id}", actor=actor)
            return True

    def api_keys(self) -> list[ApiKey]:
        with self.read() as s:
            return list(s.scalars(select(ApiKey).order_by(ApiKey.id)))

    def key_by_hash(self, key_hash: str) -> ApiKey | None:
        with self.read() as s:
            return s.scalar(select(ApiKey).where(ApiKey.key_hash == key_hash, ApiKey.revoked_at.is_(None)))

    # -- feedback --------------------------------------------------------------------------------------
    def add_feedback(self, examples: Sequence[dict[str, Any]], source: str | None, key_id: int | None) -> list[int]:
        """Store examples ({input, label, task}) in one transaction; returns their ids once committed."""
        with self.write() as s:
            rows = [Feedback(input=e["input"], label=e["label"], task=e.get("task"), source=source, key_id=key_id)
                    for e in examples]
            s.add_all(rows)
            s.flush()
            ids = [r.id for r in rows]
            self.audit(s, "feedback.add", f"feedback {ids[0]}-{ids[-1]}", key_id, detail={"count": len(ids)})
        return ids

    def pending_count(self) -> int:
        with self.read() as s:
            return int(s.scalar(select(func.count()).select_from(Feedback).where(_WAITING)) or 0)

    def feedback(self, ids: Sequence[int] | None = None, update_id: int | None = None, status: str | None = None,
                 after: int = 0, limit: int | None = None) -> list[Feedback]:
        """Feedback rows by id, the update that took them and/or status, oldest first (ids above `after`)."""
        with self.read() as s:
            query = select(Feedback).where(Feedback.id > after).order_by(Feedback.id).limit(limit)
            if ids is not None:
                query = query.where(Feedback.id.in_(list(ids)))
            if update_id is not None:
                query = query.where(Feedback.update_id == update_id)
            if status is not None:
                query = query.where(Feedback.status == status)
            return list(s.scalars(query))

    def feedback_counts(self) -> dict[str, int]:
        """Feedback examples by status (every status, zeros included)."""
        with self.read() as s:
            found = dict(s.execute(select(Feedback.status, func.count()).group_by(Feedback.status)).all())
        return {status: int(found.get(status, 0)) for status in FEEDBACK_STATUSES}

    def decide_feedback(self, feedback_id: int, status: str, key_id: int | None) -> Feedback:
        """A maintainer's decision on one example, audited: "approved" (a held or rejected example is
        trained on by the next update) or "rejected" (never trained on). LookupError: no such example;
        ValueError: its status does not allow it (it was used, or an update has taken it)."""
        if status not in _DECIDE_FROM:
            raise ValueError(f"a decision is approved or rejected, not {status!r}")
        with self.write() as s:
            row = s.get(Feedback, feedback_id)
            if row is None:
                raise LookupError(f"there is no feedback example {feedback_id}")
            before = row.status
            if before == status:
                return row  # the same decision twice changes nothing
            taken = before in ("pending", "approved") and row.update_id is not None
            if before not in _DECIDE_FROM[status] or taken:
                why = f"update {row.update_id} has taken it" if taken else f"it is {before}"
                raise ValueError(f"feedback {feedback_id} cannot be {status}: {why}")
            row.status = status
            if status == "approved":
                row.update_id = None  # back in the pool: the next update takes it
            action = "feedback.approve" if status == "approved" else "feedback.reject"
            self.audit(s, action, f"feedback {feedback_id}", key_id, detail={"from": before, "label": row.label})
            return row

    def counts(self) -> dict[str, Any]:
        """Totals for /metrics: feedback stored and pending, updates by status, the current version."""
        with self.read() as s:
            total = s.scalar(select(func.count()).select_from(Feedback)) or 0
            pending = s.scalar(select(func.count()).select_from(Feedback).where(_WAITING)) or 0
            by_status = dict(s.execute(select(Update.status, func.count()).group_by(Update.status)).all())
            state = s.get(ServiceState, 1)
            return {"feedback": int(total), "pending": int(pending),
                    "updates": {k: int(v) for k, v in by_status.items()},
                    "current_version": state.current_version if state else None}

    # -- versions --------------------------------------------------------------------------------------
    def bootstrap(self, path: str) -> bool:
        """Record the served model as version 1, current, unless a version exists; True if it did."""
        with self.write(serial=True) as s:
            if s.get(Version, 1) is not None:
                return False
            s.add(Version(number=1, path=path, status="promoted", promoted_at=utcnow()))
            s.flush()
            s.add(ServiceState(id=1, current_version=1))
            self.audit(s, "version.bootstrap", "version 1", actor="service", detail={"path": path})
            return True

    def current_version(self) -> int:
        with self.read() as s:
            state = s.get(ServiceState, 1)
            if state is None:
                raise LookupError("the store has no current version yet")
            return state.current_version

    def version(self, number: int) -> Version | None:
        with self.read() as s:
            return s.get(Version, number)

    def versions(self) -> list[Version]:
        with self.read() as s:
            return list(s.scalars(select(Version).order_by(Version.number)))

    def set_current(self, number: int, action: str, key_id: int | None, only_promoted: bool) -> Version:
        """Point the service at version `number` (promote or roll back), in one transaction.
        Raises LookupError (no such version) or ValueError (rollback to a never-promoted version)."""
        with self.write(serial=True) as s:
            version = s.get(Version, number)
            if version is None:
                raise LookupError(f"there is no version {number}")
            if only_promoted and version.promoted_at is None:
                raise ValueError(f"version {number} was never promoted (it is a {version.status} candidate); "
                                 f"promote it explicitly with POST /versions/{number}/promote")
            state = s.get(ServiceState, 1)
            assert state is not None
            before = state.current_version
            state.current_version, state.changed_at = number, utcnow()
            if version.promoted_at is None:
                version.status, version.promoted_at = "promoted", utcnow()
            self.audit(s, action, f"version {number}", key_id, detail={"from": before})
            return version

    # -- updates ---------------------------------------------------------------------------------------
    def create_update(self, options: dict[str, Any], key_id: int | None, min_pending: int = 2,
                      actor: str | None = None) -> tuple[int, bool]:
        """Queue an update on the pending feedback: (id, created). An update already queued is
        returned instead of a second one (it will take all feedback pending when it starts)."""
        with self.write(serial=True) as s:
            queued = s.scalar(select(Update.id).where(Update.status == "queued").order_by(Update.id))
            if queued is not None:
                return queued, False
            pending = s.scalar(select(func.count()).select_from(Feedback).where(_WAITING)) or 0
            if pending < min_pending:
                raise ValueError(f"an update needs at least {min_pending} pending feedback examples; "
                                 f"there are {pending}")
            update = Update(status="queued", key_id=key_id, options=options)
            s.add(update)
            s.flush()
            self.audit(s, "update.create", f"update {update.id}", key_id, actor, detail={"options": options})
            return update.id, True

    def claim_update(self, owner: str, path_for: Callable[[int], str]) -> Update | None:
        """Start the oldest queued update if none is running anywhere: it takes every pending feedback
        example, its parent is the current version and `path_for(id)` names its candidate directory."""
        with self.write(serial=True) as s:
            if s.scalar(select(Update.id).where(Update.status.in_(RUNNING))) is not None:
                return None
            update = s.scalar(select(Update).where(Update.status == "queued").order_by(Update.id))
            if update is None:
                return None
            state = s.get(ServiceState, 1)
            assert state is not None
            update.status, update.owner, update.started_at = "training", owner, utcnow()
            update.parent_version, update.candidate_path = state.current_version, path_for(update.id)
            taken = s.execute(sql_update(Feedback).where(_WAITING).values(update_id=update.id))
            if not taken.rowcount:  # type: ignore[attr-defined]
                update.status, update.finished_at, update.error = "failed", utcnow(), "no pending feedback"
            return update

    def update(self, update_id: int) -> Update | None:
        with self.read() as s:
            return s.get(Update, update_id)

    def updates(self, statuses: Sequence[str] | None = None) -> list[Update]:
        with self.read() as s:
            query = select(Update).order_by(Update.id)
            if statuses is not None:
                query = query.where(Update.status.in_(list(statuses)))
            return list(s.scalars(query))

    def set_status(self, update_id: int, status: str, owner: str) -> bool:
        """Move a running update on (training -> evaluating); False if it is no longer ours."""
        with self.write() as s:
            update = s.get(Update, update_id)
            if update is None or update.status not in RUNNING or update.owner != owner:
                return False
            update.status = status
            return True

    @staticmethod
    def _settle_feedback(s: Session, update_id: int, held: dict[int, list[Any]], used: bool) -> None:
        """The feedback an update took: the held examples become held with their reasons; the rest
        `used` (trained on or held out by a candidate) or, when no candidate was made, pending again."""
        for feedback_id, reasons in held.items():
            s.execute(sql_update(Feedback).where(Feedback.id == feedback_id, Feedback.update_id == update_id)
                      .values(status="held", reasons=reasons))
        rest = sql_update(Feedback).where(Feedback.update_id == update_id, Feedback.status.in_(("pending", "approved")))
        s.execute(rest.values(status="used") if used else rest.values(update_id=None))

    def finish_update(self, update_id: int, owner: str, report: dict[str, Any], promote: bool,
                      feedback_ids: list[int], held: dict[int, list[Any]] | None = None) -> tuple[str, int | None]:
        """Record the candidate (its files are already in place) and, if it passed the gate and the
        current version is still its parent, make it current: all in one transaction, committed last.
        The screens' `held` examples (id -> reasons) become held, the rest of the update's feedback used.
        Returns (final status, version number); status "failed" if the update is no longer ours."""
        with self.write(serial=True) as s:
            update = s.get(Update, update_id)
            if update is None or update.status not in RUNNING or update.owner != owner:
                return "failed", None
            assert update.candidate_path is not None
            state = s.get(ServiceState, 1)
            assert state is not None
            if promote and state.current_version != update.parent_version:
                promote = False
                failed = [*report.get("failed", []), f"the current version changed from {update.parent_version} "
                          f"to {state.current_version} while the update trained"]
                report = {**report, "passed": False, "failed": failed, "reason": "; ".join(failed)}
            status = "promoted" if promote else "rejected"
            number = (s.scalar(select(func.max(Version.number))) or 0) + 1  # writers are serialised here
            version = Version(number=number, path=update.candidate_path, status=status, parent=update.parent_version,
                              update_id=update_id, feedback_ids=feedback_ids, report=report,
                              promoted_at=utcnow() if promote else None)
            s.add(version)
            s.flush()
            update.status, update.finished_at, update.report = status, utcnow(), report
            update.candidate_version = version.number
            if promote:
                state.current_version, state.changed_at = version.number, utcnow()
            self._settle_feedback(s, update_id, held or {}, used=True)
            self.audit(s, f"update.{status}", f"update {update_id}", actor="service",
                       detail={"version": version.number, "parent": update.parent_version, "held": len(held or {})})
            return status, version.number

    def finish_without_candidate(self, update_id: int, owner: str, report: dict[str, Any],
                                 held: dict[int, list[Any]]) -> str:
        """End an update that made no candidate because the screens held (nearly) everything: it is
        rejected, the held examples are held and the few kept wait for the next update."""
        with self.write(serial=True) as s:
            update = s.get(Update, update_id)
            if update is None or update.status not in RUNNING or update.owner != owner:
                return "failed"
            update.status, update.finished_at, update.report = "rejected", utcnow(), report
            self._settle_feedback(s, update_id, held, used=False)
            self.audit(s, "update.rejected", f"update {update_id}", actor="service",
                       detail={"version": None, "parent": update.parent_version, "held": len(held)})
            return "rejected"

    def fail_update(self, update_id: int, error: str, owner: str | None = None) -> str | None:
        """Mark a queued or running update failed and give its feedback back to the pending pool.
        Returns its candidate directory (to remove, no version row points to it) or None."""
        with self.write() as s:
            update = s.get(Update, update_id)
            if update is None or update.status in FINAL or (owner is not None and update.owner != owner):
                return None
            update.status, update.finished_at, update.error = "failed", utcnow(), error[:4000]
            s.execute(sql_update(Feedback).where(Feedback.update_id == update_id).values(update_id=None))
            self.audit(s, "update.failed", f"update {update_id}", actor="service", detail={"error": error[:500]})
            return update.candidate_path
