"""create exams and exam_processing_jobs

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from advanced_alchemy.types import GUID, DateTimeUTC, JsonB
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "exam_processing_jobs",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("job_id", GUID(length=16), nullable=False),
        sa.Column("exam_code", sa.String(length=64), nullable=False),
        sa.Column("student_id", sa.String(length=128), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("progress", sa.SmallInteger(), nullable=False),
        sa.Column("current_step", sa.String(length=40), nullable=False),
        sa.Column("failed_step", sa.String(length=40), nullable=True),
        sa.Column("answers", JsonB, nullable=False),
        sa.Column("locale", sa.String(length=8), nullable=False),
        sa.Column("grading", JsonB, nullable=True),
        sa.Column("recommendations", JsonB, nullable=True),
        sa.Column("result", JsonB, nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("heartbeat_at", DateTimeUTC(timezone=True), nullable=True),
        sa.Column("enqueued_at", DateTimeUTC(timezone=True), nullable=True),
        sa.Column("started_at", DateTimeUTC(timezone=True), nullable=True),
        sa.Column("completed_at", DateTimeUTC(timezone=True), nullable=True),
        sa.Column("failed_at", DateTimeUTC(timezone=True), nullable=True),
        sa.Column("idempotency_key", sa.String(length=255), nullable=True),
        sa.Column("request_fingerprint", sa.String(length=64), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", DateTimeUTC(timezone=True), nullable=False),
        sa.Column("updated_at", DateTimeUTC(timezone=True), nullable=False),
        sa.CheckConstraint(
            "status IN ('pending', 'processing', 'completed', 'failed')",
            name=op.f("ck_exam_processing_jobs_status"),
        ),
        sa.CheckConstraint("progress >= 0 AND progress <= 100", name=op.f("ck_exam_processing_jobs_progress")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_exam_processing_jobs")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_exam_processing_jobs_idempotency_key")),
    )
    with op.batch_alter_table("exam_processing_jobs", schema=None) as batch_op:
        batch_op.create_index("ix_exam_processing_jobs_completed_at", ["completed_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_exam_processing_jobs_exam_code"), ["exam_code"], unique=False)
        batch_op.create_index(batch_op.f("ix_exam_processing_jobs_job_id"), ["job_id"], unique=True)
        batch_op.create_index("ix_exam_processing_jobs_status_created_at", ["status", "created_at"], unique=False)

    op.create_table(
        "exams",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("code", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("pass_percentage", sa.Float(), nullable=False),
        sa.Column("title", JsonB, nullable=False),
        sa.Column("question_count", sa.Integer(), nullable=False),
        sa.Column("definition", JsonB, nullable=False),
        sa.Column("created_at", DateTimeUTC(timezone=True), nullable=False),
        sa.Column("updated_at", DateTimeUTC(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_exams")),
    )
    with op.batch_alter_table("exams", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_exams_code"), ["code"], unique=True)


def downgrade() -> None:
    with op.batch_alter_table("exams", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_exams_code"))

    op.drop_table("exams")
    with op.batch_alter_table("exam_processing_jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_exam_processing_jobs_status_created_at")
        batch_op.drop_index(batch_op.f("ix_exam_processing_jobs_job_id"))
        batch_op.drop_index(batch_op.f("ix_exam_processing_jobs_exam_code"))
        batch_op.drop_index("ix_exam_processing_jobs_completed_at")

    op.drop_table("exam_processing_jobs")
