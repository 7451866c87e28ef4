"""The ``exam_processing_jobs`` table and the seed's state helpers on it.

Progress and ``current_step`` only move forward; the one way back is an operator's retry of a
failed or cancelled job (:meth:`ExamProcessingJob.reset_for_retry`), which resumes at the step
that failed or was cancelled.
Every write bumps ``version`` (optimistic locking), so a worker that lost its job to another
worker cannot overwrite that worker's progress.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

from advanced_alchemy.base import BigIntAuditBase, BigIntBase
from advanced_alchemy.types import GUID, DateTimeUTC, JsonB
from sqlalchemy import Boolean, CheckConstraint, Float, ForeignKey, Index, Integer, SmallInteger, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from jobs.errors import JobError
from jobs.progress import FINAL_STATUSES, STEP_RANGES, Step, is_forward
from jobs.schemas import MAX_CALLBACK_URL_LENGTH

__all__ = (
    "MAX_OWNER_LENGTH",
    "CallbackDelivery",
    "ExamProcessingJob",
    "ExamResult",
    "ExamResultTopic",
    "InvalidTransitionError",
    "WorkerHeartbeat",
    "utcnow",
)


#: ``owner`` columns: ``token:`` and a token name (64), or ``page:`` and a page-session id.
MAX_OWNER_LENGTH = 80


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
        # The dashboard's jobs list: newest first, keyset on (created_at, id) (migration 0003).
        Index("ix_exam_processing_jobs_created_at_id", "created_at", "id"),
        CheckConstraint("status IN ('pending', 'processing', 'completed', 'failed', 'cancelled')", name="status"),
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
    #: The English rendering of the error (rows written before error codes have only this).
    error_message: Mapped[str | None] = mapped_column(Text, default=None)
    #: A stable machine code (``jobs.errors.ERROR_CODES``); ``error_params`` render its message.
    error_code: Mapped[str | None] = mapped_column(String(40), default=None)
    error_params: Mapped[dict[str, Any] | None] = mapped_column(JsonB, default=None)
    #: Where the terminal status document is POSTed (``CALLBACK_ALLOWED_HOSTS``), if anywhere.
    callback_url: Mapped[str | None] = mapped_column(String(MAX_CALLBACK_URL_LENGTH), default=None)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), default=None)
    enqueued_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), default=None)
    started_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), default=None)
    #: When the job reached a final state (completed, failed or cancelled), as in the seed.
    completed_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), default=None)
    failed_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), default=None)
    idempotency_key: Mapped[str | None] = mapped_column(String(255), unique=True, default=None)
    request_fingerprint: Mapped[str | None] = mapped_column(String(64), default=None)
    #: Who submitted it with ``API_AUTH=tokens`` (``token:<name>`` or ``page:<session id>``);
    #: ``None`` with ``API_AUTH=off``. Copied to the result (``ExamResult.owner``).
    owner: Mapped[str | None] = mapped_column(String(MAX_OWNER_LENGTH), default=None)
    version: Mapped[int] = mapped_column(Integer, default=1)

    __mapper_args__ = {"version_id_col": version}  # noqa: RUF012

    @property
    def is_finished(self) -> bool:
        """Whether the job is in a final state."""
        return self.status in FINAL_STATUSES

    def _set_error(self, error: JobError | str | None) -> None:
        if isinstance(error, JobError):
            self.error_code, self.error_params, self.error_message = error.code, dict(error.params), error.english
        else:
            self.error_code, self.error_params, self.error_message = None, None, error

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

    def release_for_retry(self, error: JobError | str) -> None:
        """After a transient failure: stay ``processing`` at this step and free the job for the retry."""
        self._set_error(error)
        self.heartbeat_at = None

    def mark_completed(self, result: dict[str, Any], now: datetime) -> None:
        """Store the result and finish."""
        self._advance("completed", 100)
        self.status = "completed"
        self.result = result
        self._set_error(None)
        self.failed_step = None
        self.heartbeat_at = None
        self.completed_at = now

    def mark_failed(self, error: JobError | str, now: datetime) -> None:
        """Finish with ``error`` (progress stays where it was)."""
        if self.is_finished:
            msg = f"job {self.job_id} is already {self.status}"
            raise InvalidTransitionError(msg)
        self.failed_step = self.current_step if self.current_step != "failed" else self.failed_step
        self.status = "failed"
        self.current_step = "failed"
        self._set_error(error)
        self.heartbeat_at = None
        self.failed_at = now
        self.completed_at = now

    def mark_cancelled(self, now: datetime) -> None:
        """Stop a pending or processing job: progress stays, no error; a retry resumes at this step."""
        if self.is_finished:
            msg = f"job {self.job_id} is already {self.status}"
            raise InvalidTransitionError(msg)
        self.failed_step = self.current_step
        self.status = "cancelled"
        self.current_step = "cancelled"
        self._set_error(None)
        self.heartbeat_at = None
        self.completed_at = now

    def reset_for_retry(self) -> None:
        """Operator retry of a failed or cancelled job: back to ``pending`` at the step it stopped in."""
        if self.status not in ("failed", "cancelled"):
            msg = f"only failed or cancelled jobs can be retried; job {self.job_id} is {self.status}"
            raise InvalidTransitionError(msg)
        self.status = "pending"
        self.current_step = self.failed_step or "queued"
        self.failed_step = None
        self._set_error(None)
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


class ExamResult(BigIntBase):
    """One graded submission, written with the job's completion and kept after the job row is gone.

    ``result`` is the status document's ``result``; the columns beside it are what the results
    API filters, sorts and sums by. Indexes: newest first overall, per student and per exam
    (keyset ``graded_at desc, id desc``); the per-exam index also carries ``percentage`` and
    ``passed``, so the summary reads the index alone.
    """

    __tablename__ = "exam_results"
    __table_args__ = (
        Index("ix_exam_results_graded_at_id", "graded_at", "id"),
        Index("ix_exam_results_student_id_graded_at_id", "student_id", "graded_at", "id"),
        Index("ix_exam_results_exam_code_graded_at_id", "exam_code", "graded_at", "id"),
        Index("ix_exam_results_exam_code_percentage_passed", "exam_code", "percentage", "passed"),
        # A token without read_all lists its own results (migration 0006).
        Index("ix_exam_results_owner_graded_at_id", "owner", "graded_at", "id"),
    )

    job_id: Mapped[UUID] = mapped_column(GUID, unique=True)
    exam_code: Mapped[str] = mapped_column(String(64))
    student_id: Mapped[str] = mapped_column(String(128))
    score: Mapped[float] = mapped_column(Float)
    max_score: Mapped[float] = mapped_column(Float)
    percentage: Mapped[float] = mapped_column(Float)
    passed: Mapped[bool] = mapped_column(Boolean)
    graded_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True))
    result: Mapped[dict[str, Any]] = mapped_column(JsonB)
    #: The job's ``owner``, kept after the job row is cleaned up.
    owner: Mapped[str | None] = mapped_column(String(MAX_OWNER_LENGTH), default=None)
    topics: Mapped[list[ExamResultTopic]] = relationship(
        back_populates="exam_result", cascade="all, delete-orphan", passive_deletes=True, lazy="raise"
    )


class ExamResultTopic(BigIntBase):
    """One topic's percentage of one result, so per-topic means are an index-only aggregate."""

    __tablename__ = "exam_result_topics"
    __table_args__ = (Index("ix_exam_result_topics_exam_code_topic_percentage", "exam_code", "topic", "percentage"),)

    result_id: Mapped[int] = mapped_column(ForeignKey("exam_results.id", ondelete="CASCADE"), index=True)
    exam_code: Mapped[str] = mapped_column(String(64))
    topic: Mapped[str] = mapped_column(String(128))
    percentage: Mapped[float] = mapped_column(Float)
    exam_result: Mapped[ExamResult] = relationship(back_populates="topics", lazy="raise")


class CallbackDelivery(BigIntAuditBase):
    """One completion callback (the outbox row) and how its attempts went.

    ``state`` is ``pending`` until a ``2xx`` (``delivered``) or the end of the retry period
    (``gave_up``). ``payload`` is the exact body, so every retry sends (and signs) the same bytes.
    """

    __tablename__ = "exam_callback_deliveries"
    __table_args__ = (
        CheckConstraint("state IN ('pending', 'delivered', 'gave_up')", name="state"),
        Index("ix_exam_callback_deliveries_state_next_attempt_at", "state", "next_attempt_at"),
        Index("ix_exam_callback_deliveries_created_at", "created_at"),
    )

    delivery_id: Mapped[UUID] = mapped_column(GUID, unique=True, default=uuid4)
    job_id: Mapped[UUID] = mapped_column(GUID, index=True)
    student_id: Mapped[str] = mapped_column(String(128), index=True)
    url: Mapped[str] = mapped_column(String(MAX_CALLBACK_URL_LENGTH))
    event: Mapped[str] = mapped_column(String(32))
    payload: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_status: Mapped[int | None] = mapped_column(Integer, default=None)
    last_error: Mapped[str | None] = mapped_column(Text, default=None)
    last_attempt_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), default=None)
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), default=None)
    delivered_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), default=None)
    gave_up_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), default=None)
