"""Updates run by `lifelong worker` processes: how many times an update was started (a worker that dies
mid-update has its update queued again, up to a limit).

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("updates", sa.Column("attempts", sa.Integer, nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("updates") as batch:  # SQLite drops columns by copying the table
        batch.drop_column("attempts")
