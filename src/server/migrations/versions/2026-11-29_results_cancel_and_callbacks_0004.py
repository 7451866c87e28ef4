"""exam results, cancelled jobs, error codes and callback deliveries

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29

- ``exam_results`` (one row per graded submission, kept after the job row is cleaned up) and
  ``exam_result_topics`` (its per-topic percentages), backfilled from the completed jobs;
- ``exam_processing_jobs``: ``cancelled`` in the status check, ``error_code`` (backfilled from
  the English messages of failed jobs) and ``error_params``, ``callback_url``;
- ``exam_callback_deliveries``: the outbox and history of completion callbacks.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from advanced_alchemy.types import GUID, DateTimeUTC, JsonB
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_BIGINT = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
#: SQLite reflects GUID's BINARY(16) as NUMERIC(16): the table a batch recreates keeps the real type.
_JOB_ID_TYPE: tuple[sa.Column[Any], ...] = (sa.Column("job_id", GUID(length=16), nullable=False),)
_STATUSES_BEFORE = "status IN ('pending', 'processing', 'completed', 'failed')"
_STATUSES = "status IN ('pending', 'processing', 'completed', 'failed', 'cancelled')"

#: Error codes of jobs that failed before codes existed, from their English messages (first match).
_LEGACY_ERROR_CODES = (
    ("Exam % no longer exists.", "exam_missing"),
    ("Exam % is closed%", "exam_closed"),
    ("The answers no longer fit the exam:%", "answers_invalid"),
    ("Gave up after % attempts: AI request failed:%", "ai_unavailable"),
    ("Gave up after % attempts: attempt stopped after the job time limit%", "time_limit"),
    ("Gave up after %", "retries_exhausted"),
    ("AI answer unusable:%", "ai_invalid_answer"),
)

_BACKFILL_RESULTS = {
    "postgresql": """
        INSERT INTO exam_results
            (job_id, exam_code, student_id, score, max_score, percentage, passed, graded_at, result)
        SELECT job_id, exam_code, student_id,
               (result->>'score')::float, (result->>'max_score')::float, (result->>'percentage')::float,
               (result->>'passed')::boolean, completed_at, result
        FROM exam_processing_jobs
        WHERE status = 'completed' AND result IS NOT NULL AND completed_at IS NOT NULL
    """,
    "sqlite": """
        INSERT INTO exam_results
            (job_id, exam_code, student_id, score, max_score, percentage, passed, graded_at, result)
        SELECT job_id, exam_code, student_id,
               json_extract(result, '$.score'), json_extract(result, '$.max_score'),
               json_extract(result, '$.percentage'), json_extract(result, '$.passed'), completed_at, result
        FROM exam_processing_jobs
        WHERE status = 'completed' AND result IS NOT NULL AND completed_at IS NOT NULL
    """,
}
_BACKFILL_TOPICS = {
    "postgresql": """
        INSERT INTO exam_result_topics (result_id, exam_code, topic, percentage)
        SELECT r.id, r.exam_code, t.value->>'topic', (t.value->>'percentage')::float
        FROM exam_results r CROSS JOIN LATERAL jsonb_array_elements(r.result->'topics') AS t(value)
    """,
    "sqlite": """
        INSERT INTO exam_result_topics (result_id, exam_code, topic, percentage)
        SELECT r.id, r.exam_code, json_extract(t.value, '$.topic'), json_extract(t.value, '$.percentage')
        FROM exam_results AS r, json_each(r.result, '$.topics') AS t
    """,
}


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    op.create_table(
        "exam_results",
        sa.Column("id", _BIGINT, nullable=False),
        sa.Column("job_id", GUID(length=16), nullable=False),
        sa.Column("exam_code", sa.String(length=64), nullable=False),
        sa.Column("student_id", sa.String(length=128), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("max_score", sa.Float(), nullable=False),
        sa.Column("percentage", sa.Float(), nullable=False),
        sa.Column("passed", sa.Boolean(), nullable=False),
        sa.Column("graded_at", DateTimeUTC(timezone=True), nullable=False),
        sa.Column("result", JsonB, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_exam_results")),
        sa.UniqueConstraint("job_id", name=op.f("uq_exam_results_job_id")),
    )
    op.create_table(
        "exam_result_topics",
        sa.Column("id", _BIGINT, nullable=False),
        sa.Column("result_id", _BIGINT, nullable=False),
        sa.Column("exam_code", sa.String(length=64), nullable=False),
        sa.Column("topic", sa.String(length=128), nullable=False),
        sa.Column("percentage", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["result_id"],
            ["exam_results.id"],
            name=op.f("fk_exam_result_topics_result_id_exam_results"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_exam_result_topics")),
    )
    # Backfilled before the indexes exist: one bulk build each instead of row-by-row maintenance.
    op.execute(_BACKFILL_RESULTS[dialect])
    op.execute(_BACKFILL_TOPICS[dialect])
    with op.batch_alter_table("exam_results", schema=None) as batch_op:
        batch_op.create_index("ix_exam_results_graded_at_id", ["graded_at", "id"], unique=False)
        batch_op.create_index(
            "ix_exam_results_student_id_graded_at_id", ["student_id", "graded_at", "id"], unique=False
        )
        batch_op.create_index("ix_exam_results_exam_code_graded_at_id", ["exam_code", "graded_at", "id"], unique=False)
        batch_op.create_index(
            "ix_exam_results_exam_code_percentage_passed", ["exam_code", "percentage", "passed"], unique=False
        )
    with op.batch_alter_table("exam_result_topics", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_exam_result_topics_result_id"), ["result_id"], unique=False)
        batch_op.create_index(
            "ix_exam_result_topics_exam_code_topic_percentage", ["exam_code", "topic", "percentage"], unique=False
        )

    op.create_table(
        "exam_callback_deliveries",
        sa.Column("id", _BIGINT, nullable=False),
        sa.Column("delivery_id", GUID(length=16), nullable=False),
        sa.Column("job_id", GUID(length=16), nullable=False),
        sa.Column("student_id", sa.String(length=128), nullable=False),
        sa.Column("url", sa.String(length=2048), nullable=False),
        sa.Column("event", sa.String(length=32), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_status", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("last_attempt_at", DateTimeUTC(timezone=True), nullable=True),
        sa.Column("next_attempt_at", DateTimeUTC(timezone=True), nullable=True),
        sa.Column("delivered_at", DateTimeUTC(timezone=True), nullable=True),
        sa.Column("gave_up_at", DateTimeUTC(timezone=True), nullable=True),
        sa.Column("created_at", DateTimeUTC(timezone=True), nullable=False),
        sa.Column("updated_at", DateTimeUTC(timezone=True), nullable=False),
        sa.CheckConstraint(
            "state IN ('pending', 'delivered', 'gave_up')", name=op.f("ck_exam_callback_deliveries_state")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_exam_callback_deliveries")),
        sa.UniqueConstraint("delivery_id", name=op.f("uq_exam_callback_deliveries_delivery_id")),
    )
    with op.batch_alter_table("exam_callback_deliveries", schema=None) as batch_op:
        batch_op.create_index("ix_exam_callback_deliveries_created_at", ["created_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_exam_callback_deliveries_job_id"), ["job_id"], unique=False)
        batch_op.create_index(
            "ix_exam_callback_deliveries_state_next_attempt_at", ["state", "next_attempt_at"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_exam_callback_deliveries_student_id"), ["student_id"], unique=False)

    with op.batch_alter_table("exam_processing_jobs", schema=None, reflect_args=_JOB_ID_TYPE) as batch_op:
        batch_op.add_column(sa.Column("error_code", sa.String(length=40), nullable=True))
        batch_op.add_column(sa.Column("error_params", JsonB, nullable=True))
        batch_op.add_column(sa.Column("callback_url", sa.String(length=2048), nullable=True))
        batch_op.drop_constraint(op.f("ck_exam_processing_jobs_status"), type_="check")
        batch_op.create_check_constraint(op.f("ck_exam_processing_jobs_status"), sa.text(_STATUSES))

    jobs = sa.table("exam_processing_jobs", sa.column("status"), sa.column("error_code"), sa.column("error_message"))
    for pattern, code in _LEGACY_ERROR_CODES:
        op.execute(
            jobs.update()
            .where(jobs.c.status == "failed", jobs.c.error_code.is_(None), jobs.c.error_message.like(pattern))
            .values(error_code=code)
        )
    op.execute(
        jobs.update()
        .where(jobs.c.status == "failed", jobs.c.error_code.is_(None), jobs.c.error_message.is_not(None))
        .values(error_code="internal_error")
    )


def downgrade() -> None:
    jobs = sa.table("exam_processing_jobs", sa.column("status"), sa.column("current_step"))
    # The older schema has no cancelled state: such jobs become failed ones an operator may retry.
    op.execute(jobs.update().where(jobs.c.status == "cancelled").values(status="failed", current_step="failed"))
    with op.batch_alter_table("exam_processing_jobs", schema=None, reflect_args=_JOB_ID_TYPE) as batch_op:
        batch_op.drop_constraint(op.f("ck_exam_processing_jobs_status"), type_="check")
        batch_op.create_check_constraint(op.f("ck_exam_processing_jobs_status"), sa.text(_STATUSES_BEFORE))
        batch_op.drop_column("callback_url")
        batch_op.drop_column("error_params")
        batch_op.drop_column("error_code")

    with op.batch_alter_table("exam_callback_deliveries", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_exam_callback_deliveries_student_id"))
        batch_op.drop_index("ix_exam_callback_deliveries_state_next_attempt_at")
        batch_op.drop_index(batch_op.f("ix_exam_callback_deliveries_job_id"))
        batch_op.drop_index("ix_exam_callback_deliveries_created_at")
    op.drop_table("exam_callback_deliveries")

    with op.batch_alter_table("exam_result_topics", schema=None) as batch_op:
        batch_op.drop_index("ix_exam_result_topics_exam_code_topic_percentage")
        batch_op.drop_index(batch_op.f("ix_exam_result_topics_result_id"))
    op.drop_table("exam_result_topics")
    with op.batch_alter_table("exam_results", schema=None) as batch_op:
        batch_op.drop_index("ix_exam_results_exam_code_percentage_passed")
        batch_op.drop_index("ix_exam_results_exam_code_graded_at_id")
        batch_op.drop_index("ix_exam_results_student_id_graded_at_id")
        batch_op.drop_index("ix_exam_results_graded_at_id")
    op.drop_table("exam_results")
