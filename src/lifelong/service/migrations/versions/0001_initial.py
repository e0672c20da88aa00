"""The first schema: API keys, updates, feedback, versions, the current-version pointer, audit.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("role", sa.String(20), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at", TIME, nullable=False),
        sa.Column("revoked_at", TIME, nullable=True),
    )
    op.create_table(
        "updates",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("status", sa.String(20), nullable=False, index=True),
        sa.Column("created_at", TIME, nullable=False),
        sa.Column("started_at", TIME, nullable=True),
        sa.Column("finished_at", TIME, nullable=True),
        sa.Column("key_id", sa.Integer, sa.ForeignKey("api_keys.id"), nullable=True),
        sa.Column("options", sa.JSON, nullable=False),
        sa.Column("parent_version", sa.Integer, nullable=True),
        sa.Column("candidate_path", sa.String(300), nullable=True),
        sa.Column("candidate_version", sa.Integer, nullable=True),
        sa.Column("owner", sa.String(200), nullable=True),
        sa.Column("report", sa.JSON, nullable=True),
        sa.Column("error", sa.Text, nullable=True),
    )
    op.create_table(
        "feedback",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("created_at", TIME, nullable=False),
        sa.Column("input", sa.JSON, nullable=False),
        sa.Column("label", sa.String(200), nullable=False),
        sa.Column("task", sa.Integer, nullable=True),
        sa.Column("source", sa.String(200), nullable=True),
        sa.Column("key_id", sa.Integer, sa.ForeignKey("api_keys.id"), nullable=True),
        sa.Column("update_id", sa.Integer, sa.ForeignKey("updates.id"), nullable=True, index=True),
    )
    op.create_table(
        "versions",
        sa.Column("number", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("path", sa.String(300), nullable=False, unique=True),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("parent", sa.Integer, nullable=True),
        sa.Column("update_id", sa.Integer, sa.ForeignKey("updates.id"), nullable=True),
        sa.Column("created_at", TIME, nullable=False),
        sa.Column("promoted_at", TIME, nullable=True),
        sa.Column("feedback_ids", sa.JSON, nullable=False),
        sa.Column("report", sa.JSON, nullable=True),
    )
    op.create_table(
        "service_state",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("current_version", sa.Integer, sa.ForeignKey("versions.number"), nullable=False),
        sa.Column("changed_at", TIME, nullable=False),
    )
    op.create_table(
        "audit",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("at", TIME, nullable=False),
        sa.Column("key_id", sa.Integer, nullable=True),
        sa.Column("actor", sa.String(100), nullable=False),
        sa.Column("action", sa.String(50), nullable=False),
        sa.Column("object", sa.String(200), nullable=False),
        sa.Column("detail", sa.JSON, nullable=True),
    )


def downgrade() -> None:
    for table in ("audit", "service_state", "versions", "feedback", "updates", "api_keys"):
        op.drop_table(table)
