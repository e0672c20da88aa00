"""Screening: each feedback example gets a status (pending, held, approved, rejected, used) and, when the
screens hold it, their reasons.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("feedback", sa.Column("status", sa.String(20), nullable=False, server_default="pending"))
    op.add_column("feedback", sa.Column("reasons", sa.JSON, nullable=True))
    op.create_index("ix_feedback_status", "feedback", ["status"])
    # examples a finished update already took were used by it; the rest (no update, or one still running) wait
    op.execute("UPDATE feedback SET status = 'used' WHERE update_id IN "
               "(SELECT id FROM updates WHERE status IN ('promoted', 'rejected'))")


def downgrade() -> None:
    op.drop_index("ix_feedback_status", table_name="feedback")
    with op.batch_alter_table("feedback") as batch:  # SQLite drops columns by copying the table
        batch.drop_column("reasons")
        batch.drop_column("status")
