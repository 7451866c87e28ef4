"""worker heartbeats

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from advanced_alchemy.types import DateTimeUTC
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "exam_worker_heartbeats",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("worker_id", sa.String(length=64), nullable=False),
        sa.Column("hostname", sa.String(length=255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("threads", sa.Integer(), nullable=False),
        sa.Column("queue_connection", sa.String(length=16), nullable=False),
        sa.Column("heartbeat_at", DateTimeUTC(timezone=True), nullable=False),
        sa.Column("created_at", DateTimeUTC(timezone=True), nullable=False),
        sa.Column("updated_at", DateTimeUTC(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_exam_worker_heartbeats")),
    )
    with op.batch_alter_table("exam_worker_heartbeats", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_exam_worker_heartbeats_heartbeat_at"), ["heartbeat_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_exam_worker_heartbeats_worker_id"), ["worker_id"], unique=True)


def downgrade() -> None:
    with op.batch_alter_table("exam_worker_heartbeats", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_exam_worker_heartbeats_worker_id"))
        batch_op.drop_index(batch_op.f("ix_exam_worker_heartbeats_heartbeat_at"))

    op.drop_table("exam_worker_heartbeats")
