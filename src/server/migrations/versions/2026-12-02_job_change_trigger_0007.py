"""Job changes announced by PostgreSQL itself: a trigger NOTIFYs ``exam_jobs``

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02

On PostgreSQL, every insert of an ``exam_processing_jobs`` row, and every update that changes a
column a status document or the dashboard shows, sends ``pg_notify('exam_jobs', '<job_id>
<version>')`` from a row trigger, in the writing transaction (delivered at commit, dropped on
rollback). Until now each writer sent it as one more statement after its ``UPDATE``: a fifth of
a busy worker's event loop (``bench/inflight.py``). The trigger also covers writes made outside
the ORM (many rows in one statement, an operator's SQL). SQLite has no ``NOTIFY``: nothing
changes there (``jobs.live`` publishes in process).

The columns are ``jobs.live.WATCHED_COLUMNS`` as of this revision (a test keeps them equal).
"""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

WATCHED_COLUMNS = (
    "status",
    "progress",
    "current_step",
    "failed_step",
    "attempts",
    "result",
    "error_message",
    "error_code",
    "error_params",
    "started_at",
    "completed_at",
)

_FUNCTION = """
CREATE OR REPLACE FUNCTION exam_jobs_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('exam_jobs', NEW.job_id::text || ' ' || NEW.version::text);
    RETURN NULL;
END
$$
"""


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    changed = " OR ".join(f"OLD.{name} IS DISTINCT FROM NEW.{name}" for name in WATCHED_COLUMNS)
    op.execute(_FUNCTION)
    op.execute(
        "CREATE TRIGGER exam_jobs_notify_insert AFTER INSERT ON exam_processing_jobs "
        "FOR EACH ROW EXECUTE FUNCTION exam_jobs_notify()"
    )
    op.execute(
        "CREATE TRIGGER exam_jobs_notify_update AFTER UPDATE ON exam_processing_jobs "
        f"FOR EACH ROW WHEN ({changed}) EXECUTE FUNCTION exam_jobs_notify()"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP TRIGGER IF EXISTS exam_jobs_notify_update ON exam_processing_jobs")
    op.execute("DROP TRIGGER IF EXISTS exam_jobs_notify_insert ON exam_processing_jobs")
    op.execute("DROP FUNCTION IF EXISTS exam_jobs_notify()")
