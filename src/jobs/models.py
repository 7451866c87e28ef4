"""The ``exam_processing_jobs`` table and the seed's state helpers on it.

Progress and ``current_step`` only move forward; the one way back is an operator's retry of a
failed job (:meth:`ExamProcessingJob.reset_for_retry`), which resumes at the step that failed.
Every write bumps ``version`` (optimistic locking), so a worker that lost its job to another
worker cannot overwrite that worker's progress.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

from advanced_alchemy.base import BigIntAuditBase
from advanced_alchemy.types import GUID, DateTimeUTC, JsonB
from sqlalchemy import CheckConstraint, Index, Integer, SmallInteger, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from jobs.progress import STEP_RANGES, Step, is_forward

__all__ = ("ExamProcessingJob", "InvalidTransitionError", "WorkerHeartbeat", "utcnow")


def utcnow() -> datetime:
    """Return the current time in UTC (timezone-aware)."""
    return datetime.now(UTC)


class InvalidTransitionError(ValueError):
    """Raised when a change would move a job's progress or step backwards, or leave a final state."""


class ExamProcessingJob(BigIntAuditBase):
    """One submission and its processing state (the seed's table, plus what the pipeline needs)."""

    __tablename__ = "exam_processing_jobs"
    __table_args__ = (
        Index("ix_exam_processing_jobs_status_created_at", "status", "created_at"),
        Index("ix_exam_processing_jobs_completed_at", "completed_at"),
        CheckConstraint("status IN ('pending', 'processing', 'completed', 'failed')", name="status"),
        CheckConstraint("progress >= 0 AND progress <= 100", name="progress"),
    )

    job_id: Mapped[UUID] = mapped_column(GUID, unique=True, index=True, default=uuid4)
    exam_code: Mapped[str] = mapped_column(String(64), index=True)
    student_id: Mapped[str] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(16), default="pending")
    progress: Mapped[int] = mapped_column(SmallInteger, default=0)
    current_step: Mapped[str] = mapped_column(String(40), default="queued")
    #: The step that failed, so a retry resumes there.
    failed_step: Mapped[str | None] = mapped_column(String(40), default=None)
    answers: Mapped[dict[str, Any]] = mapped_column(JsonB)
    #: Language the student asked in; recommendations are written in it.
    locale: Mapped[str] = mapped_column(String(8), default="en")
    #: The grading, kept across retries so it is never redone.
    grading: Mapped[dict[str, Any] | None] = mapped_column(JsonB, default=None)
    #: The recommendations received (AI or rule-based), kept so the AI is never paid twice.
    recommendations: Mapped[dict[str, Any] | None] = mapped_column(JsonB, default=None)
    result: Mapped[dict[str, Any] | None] = mapped_column(JsonB, default=None)
    error_message: Mapped[str | None] = mapped_column(Text, default=None)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), default=None)
    enqueued_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), default=None)
    started_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), default=None)
    #: When the job reached a final state (completed or failed), as in the seed.
    completed_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), default=None)
    failed_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), default=None)
    idempotency_key: Mapped[str | None] = mapped_column(String(255), unique=True, default=None)
    request_fingerprint: Mapped[str | None] = mapped_column(String(64), default=None)
    version: Mapped[int] = mapped_column(Integer, default=1)

    __mapper_args__ = {"version_id_col": version}  # noqa: RUF012

    @property
    def is_finished(self) -> bool:
        """Whether the job is in a final state."""
        return self.status in ("completed", "failed")

    def _advance(self, step: Step, progress: int) -> None:
        if self.is_finished:
            msg = f"job {self.job_id} is already {self.status}"
            raise InvalidTransitionError(msg)
        if not is_forward(self.current_step, step):
            msg = f"step cannot go back from {self.current_step} to {step}"
            raise InvalidTransitionError(msg)
        self.current_step = step
        self.progress = max(self.progress, min(progress, 100))

    def mark_processing(self, now: datetime) -> None:
        """Start an attempt: count it, take the heartbeat, and keep ``started_at`` of the first."""
        if self.is_finished:
            msg = f"job {self.job_id} is already {self.status}"
            raise InvalidTransitionError(msg)
        self.status = "processing"
        self.attempts += 1
        self.heartbeat_at = now
        self.started_at = self.started_at or now

    def enter_step(self, step: Step, now: datetime) -> None:
        """Move to ``step`` at the start of its progress range."""
        self._advance(step, STEP_RANGES[step][0])
        self.heartbeat_at = now

    def update_progress(self, progress: int, now: datetime, step: Step | None = None) -> None:
        """Raise progress (never lowers it) within the current or a later step."""
        self._advance(step or self.current_step, progress)  # type: ignore[arg-type]
        self.heartbeat_at = now

    def release_for_retry(self, error: str) -> None:
        """After a transient failure: stay ``processing`` at this step and free the job for the retry."""
        self.error_message = error
        self.heartbeat_at = None

    def mark_completed(self, result: dict[str, Any], now: datetime) -> None:
        """Store the result and finish."""
        self._advance("completed", 100)
        self.status = "completed"
        self.result = result
        self.error_message = None
        self.failed_step = None
        self.heartbeat_at = None
        self.completed_at = now

    def mark_failed(self, error: str, now: datetime) -> None:
        """Finish with ``error`` (progress stays where it was)."""
        if self.is_finished:
            msg = f"job {self.job_id} is already {self.status}"
            raise InvalidTransitionError(msg)
        self.failed_step = self.current_step if self.current_step != "failed" else self.failed_step
        self.status = "failed"
        self.current_step = "failed"
        self.error_message = error
        self.heartbeat_at = None
        self.failed_at = now
        self.completed_at = now

    def reset_for_retry(self) -> None:
        """Operator retry of a failed job: back to ``pending`` at the step that failed."""
        if self.status != "failed":
            msg = f"only failed jobs can be retried; job {self.job_id} is {self.status}"
            raise InvalidTransitionError(msg)
        self.status = "pending"
        self.current_step = self.failed_step or "queued"
        self.failed_step = None
        self.error_message = None
        self.completed_at = None
        self.failed_at = None
        self.enqueued_at = None
        self.heartbeat_at = None


class WorkerHeartbeat(BigIntAuditBase):
    """One live worker process (embedded or Dramatiq), refreshed every few seconds while it runs."""

    __tablename__ = "exam_worker_heartbeats"

    worker_id: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    hostname: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    threads: Mapped[int] = mapped_column(Integer)
    queue_connection: Mapped[str] = mapped_column(String(16))
    heartbeat_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True), index=True)
