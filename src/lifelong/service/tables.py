"""The service's tables (SQLAlchemy 2 declarative models). The schema itself is created by the Alembic
migrations in migrations/versions, which must be kept in step with these classes (a test compares them)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, ClassVar

from sqlalchemy import JSON, DateTime, ForeignKey, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

ROLES = ("reader", "contributor", "maintainer")
FINAL = ("promoted", "rejected", "failed")
RUNNING = ("training", "evaluating")
# pending: waiting for the next update (or taken by the one running now); held: the screens kept it out of
# training, for a maintainer to decide; approved: a maintainer let it through (trained in the next update);
# rejected: a maintainer refused it (never trained on); used: a finished update took it (trained on, or held
# out to gate the candidate)
FEEDBACK_STATUSES = ("pending", "held", "approved", "rejected", "used")


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: DateTime(timezone=True), dict[str, Any]: JSON,
                                                     list[Any]: JSON}


class ApiKey(Base):
    __tablename__ = "api_keys"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    role: Mapped[str] = mapped_column(String(20))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)  # sha256 of the key; the key itself is never kept
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)


class Update(Base):
    __tablename__ = "updates"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    status: Mapped[str] = mapped_column(String(20), index=True)  # queued|training|evaluating|promoted|rejected|failed
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(default=None)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)
    key_id: Mapped[int | None] = mapped_column(ForeignKey("api_keys.id"), default=None)
    options: Mapped[dict[str, Any]] = mapped_column(default=dict)
    parent_version: Mapped[int | None] = mapped_column(default=None)
    candidate_path: Mapped[str | None] = mapped_column(String(300), default=None)  # chosen before files are written
    candidate_version: Mapped[int | None] = mapped_column(default=None)
    owner: Mapped[str | None] = mapped_column(String(200), default=None)  # host:pid of the process running it
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")  # times a worker started it
    report: Mapped[dict[str, Any] | None] = mapped_column(default=None)
    error: Mapped[str | None] = mapped_column(Text, default=None)


class Feedback(Base):
    __tablename__ = "feedback"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    input: Mapped[Any] = mapped_column(JSON)
    label: Mapped[str] = mapped_column(String(200))
    task: Mapped[int | None] = mapped_column(default=None)
    source: Mapped[str | None] = mapped_column(String(200), default=None)
    key_id: Mapped[int | None] = mapped_column(ForeignKey("api_keys.id"), default=None)
    update_id: Mapped[int | None] = mapped_column(ForeignKey("updates.id"), default=None, index=True)
    status: Mapped[str] = mapped_column(String(20), default="pending", server_default="pending", index=True)
    reasons: Mapped[list[Any] | None] = mapped_column(default=None)  # why the screens held it: [{screen, reason}]


class Version(Base):
    __tablename__ = "versions"
    number: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)  # 1, 2, ... no gaps
    path: Mapped[str] = mapped_column(String(300), unique=True)  # relative to the versions directory
    status: Mapped[str] = mapped_column(String(20))  # promoted (at some time) or rejected (a kept candidate)
    parent: Mapped[int | None] = mapped_column(default=None)
    update_id: Mapped[int | None] = mapped_column(ForeignKey("updates.id"), default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    promoted_at: Mapped[datetime | None] = mapped_column(default=None)
    feedback_ids: Mapped[list[Any]] = mapped_column(default=list)
    report: Mapped[dict[str, Any] | None] = mapped_column(default=None)


class ServiceState(Base):
    __tablename__ = "service_state"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)  # one row, id 1
    current_version: Mapped[int] = mapped_column(ForeignKey("versions.number"))
    changed_at: Mapped[datetime] = mapped_column(default=utcnow)


class Audit(Base):
    __tablename__ = "audit"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    key_id: Mapped[int | None] = mapped_column(default=None)
    actor: Mapped[str] = mapped_column(String(100))  # "key 3", "cli", "service"
    action: Mapped[str] = mapped_column(String(50))
    object: Mapped[str] = mapped_column(String(200))
    detail: Mapped[dict[str, Any] | None] = mapped_column(default=None)
