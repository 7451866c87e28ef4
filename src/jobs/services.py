"""Reading and changing ``exam_processing_jobs``: submit, look up, claim, retry, clean up.

Every method works inside the caller's session and leaves committing to it, so one request or
one pipeline step is one transaction.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol, cast
from uuid import UUID

import msgspec
from advanced_alchemy.filters import CollectionFilter, LimitOffset, OrderBy
from advanced_alchemy.repository import SQLAlchemyAsyncRepository
from advanced_alchemy.service import SQLAlchemyAsyncRepositoryService
from sqlalchemy import ColumnElement, and_, bindparam, delete, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, async_scoped_session

from core.errors import IdempotencyConflictError
from jobs.models import ExamProcessingJob, utcnow

__all__ = (
    "PENDING_RESEND_AFTER",
    "JobService",
    "JobStatusView",
    "Submission",
    "fetch_status",
    "request_fingerprint",
)

#: Seconds after which a pending job that was sent but never started is sent again.
PENDING_RESEND_AFTER = 900.0


class Submission(msgspec.Struct, frozen=True, kw_only=True):
    """A validated submission, ready to be stored."""

    exam_code: str
    student_id: str
    answers: dict[str, Any]
    locale: str = "en"
    idempotency_key: str | None = None
    callback_url: str | None = None
    #: Who submitted it (``access.principal.Principal.owner``); ``None`` with ``API_AUTH=off``.
    owner: str | None = None


def request_fingerprint(submission: Submission) -> str:
    """Hash what the client sent, so a reused ``Idempotency-Key`` with another body is caught."""
    sent: dict[str, Any] = {
        "exam_code": submission.exam_code,
        "student_id": submission.student_id,
        "answers": submission.answers,
    }
    if submission.callback_url is not None:  # absent: the same hash as before callbacks existed
        sent["callback_url"] = submission.callback_url
    if submission.owner is not None:  # another caller reusing a key is a conflict, never this job
        sent["owner"] = submission.owner
    canonical = msgspec.json.encode(sent, order="sorted")
    return hashlib.sha256(canonical).hexdigest()


class JobService(SQLAlchemyAsyncRepositoryService[ExamProcessingJob]):
    """Operations on exam-processing jobs."""

    class Repo(SQLAlchemyAsyncRepository[ExamProcessingJob]):
        """Repository of :class:`ExamProcessingJob`."""

        model_type = ExamProcessingJob

    repository_type = Repo

    def __init__(self, session: AsyncSession | async_scoped_session[AsyncSession], **kwargs: Any) -> None:
        # Callers catch SQLAlchemy's own errors (IntegrityError, DBAPIError → 503/retry): don't wrap them.
        kwargs.setdefault("wrap_exceptions", False)
        kwargs.setdefault("auto_commit", False)
        super().__init__(session=session, **kwargs)

    async def get_by_job_id(self, job_id: UUID) -> ExamProcessingJob | None:
        """Return the job, or ``None`` (one unique-index lookup)."""
        return await self.get_one_or_none(job_id=job_id)

    async def _by_idempotency_key(self, key: str) -> ExamProcessingJob | None:
        return await self.get_one_or_none(idempotency_key=key)

    async def submit(self, submission: Submission) -> tuple[ExamProcessingJob, bool]:
        """Store a new pending job, or return the earlier one for a repeated ``Idempotency-Key``.

        Returns the job and whether it was created now; the new job is committed. A repeated key
        is found by the unique index: the insert fails, and the earlier job is read instead (this
        also settles two concurrent requests with the same key).
        """
        fingerprint = request_fingerprint(submission)
        key = submission.idempotency_key
        job = ExamProcessingJob(
            # Sent right after this commit; a failed send clears it again (see jobs.dispatch).
            enqueued_at=utcnow(),
            exam_code=submission.exam_code,
            student_id=submission.student_id,
            answers=submission.answers,
            locale=submission.locale,
            idempotency_key=key,
            request_fingerprint=fingerprint,
            callback_url=submission.callback_url,
            owner=submission.owner,
        )
        try:
            # The one method that commits; no refresh (all columns are known: no extra SELECT).
            job = await self.create(job, auto_commit=True, auto_refresh=False)
        except IntegrityError:
            await self.repository.session.rollback()
            if key is None:
                raise
            existing = await self._by_idempotency_key(key)
            if existing is None:
                raise
            return self._replay(existing, fingerprint), False
        return job, True

    @staticmethod
    def _replay(existing: ExamProcessingJob, fingerprint: str) -> ExamProcessingJob:
        if existing.request_fingerprint != fingerprint:
            raise IdempotencyConflictError
        return existing

    async def claim(self, job_id: UUID, *, stale_after: float, now: datetime | None = None) -> ExamProcessingJob | None:
        """Start an attempt on the job if nobody else is running it; ``None`` if it must be left alone.

        A job is claimable when pending, or processing with no heartbeat (released for a retry)
        or a stale one (its worker died). The version column makes two concurrent claims of the
        same job end with one winner: the loser's commit fails with ``StaleDataError``.
        """
        now = now or utcnow()
        job = await self.get_by_job_id(job_id)
        if job is None or job.is_finished:
            return None
        fresh = job.heartbeat_at is not None and now - job.heartbeat_at < timedelta(seconds=stale_after)
        if job.status == "processing" and fresh:
            return None
        # Changed in memory, not via update() (which flushes): the version check runs at the caller's commit.
        job.mark_processing(now)
        return job

    async def mark_enqueued(self, job_ids: Sequence[UUID], now: datetime | None = None) -> None:
        """Record that messages for these jobs reached the broker."""
        if not job_ids:
            return
        # Hand-written: one UPDATE by a list of job ids; the library's update_many needs loaded rows.
        stmt = (
            update(ExamProcessingJob)
            .where(ExamProcessingJob.job_id.in_(job_ids))
            .values(enqueued_at=now or utcnow())
            .execution_options(synchronize_session=False)
        )
        await self.repository.session.execute(stmt)

    async def mark_unsent(self, job_ids: Sequence[UUID]) -> None:
        """Record that messages for these pending jobs did not reach the broker (the reconciler sends them)."""
        if not job_ids:
            return
        # Hand-written: one conditional UPDATE by job ids; the library's update_many needs loaded rows.
        stmt = (
            update(ExamProcessingJob)
            .where(ExamProcessingJob.job_id.in_(job_ids), ExamProcessingJob.status == "pending")
            .values(enqueued_at=None)
            .execution_options(synchronize_session=False)
        )
        await self.repository.session.execute(stmt)

    async def release_stalled(self, job_id: UUID, version: int, now: datetime | None = None) -> bool:
        """Free a stalled job for the next claim, unless it changed since it was read (its worker woke up)."""
        # Hand-written: a compare-and-set UPDATE on the version read earlier; the library has none.
        stmt = (
            update(ExamProcessingJob)
            .where(
                ExamProcessingJob.job_id == job_id,
                ExamProcessingJob.version == version,
                ExamProcessingJob.status == "processing",
            )
            .values(heartbeat_at=None, enqueued_at=now or utcnow(), version=version + 1, updated_at=now or utcnow())
            .execution_options(synchronize_session=False)
        )
        result = await self.repository.session.execute(stmt)
        return bool(getattr(result, "rowcount", 0))

    async def list_recent(self, status: str | None = None, limit: int = 10) -> Sequence[ExamProcessingJob]:
        """The newest jobs, optionally of one status (the seed's ``SELECT … LIMIT 10``)."""
        by_status: dict[str, Any] = {"status": status} if status else {}
        return await self.get_many(
            OrderBy("created_at", "desc"),
            OrderBy("id", "desc"),
            LimitOffset(limit=limit, offset=0),
            **by_status,
        )

    async def needing_dispatch(
        self,
        *,
        stale_after: float,
        unsent_after: float,
        limit: int = 500,
        now: datetime | None = None,
        resend_after: float = PENDING_RESEND_AFTER,
    ) -> Sequence[ExamProcessingJob]:
        """Jobs no worker will pick up without a new message.

        Pending jobs never handed to the broker (it was down at submit time), and processing
        jobs whose worker stopped sending heartbeats. ``resend_after``: seconds after which a
        message that reached the broker counts as lost (``0`` when the broker is known to have
        lost every message it held).
        """
        now = now or utcnow()
        unsent_cutoff = now - timedelta(seconds=unsent_after)
        resend_cutoff = now - timedelta(seconds=resend_after)
        stale_cutoff = now - timedelta(seconds=stale_after)
        due = or_(
            and_(
                ExamProcessingJob.status == "pending",
                ExamProcessingJob.enqueued_at.is_(None),
                ExamProcessingJob.created_at < unsent_cutoff,
            ),
            # A message lost after reaching the broker (a flushed Redis, a dropped
            # dead letter): sent again; a duplicate is skipped by the claim.
            and_(ExamProcessingJob.status == "pending", ExamProcessingJob.enqueued_at < resend_cutoff),
            and_(
                ExamProcessingJob.status == "processing",
                or_(
                    ExamProcessingJob.heartbeat_at < stale_cutoff,
                    # Released for a retry: its message may wait behind a backlog, so
                    # only a long silence means the message was lost.
                    and_(
                        ExamProcessingJob.heartbeat_at.is_(None),
                        ExamProcessingJob.updated_at < resend_cutoff,
                    ),
                ),
            ),
        )
        return await self.get_many(due, OrderBy("created_at", "asc"), LimitOffset(limit=limit, offset=0))

    async def unfinished(self, limit: int = 10_000) -> Sequence[ExamProcessingJob]:
        """Every pending or processing job, oldest first (embedded start-up recovery)."""
        return await self.get_many(
            CollectionFilter("status", ("pending", "processing")),
            OrderBy("created_at", "asc"),
            LimitOffset(limit=limit, offset=0),
        )

    async def retry(self, job: ExamProcessingJob) -> ExamProcessingJob:
        """Send a failed job back to ``pending`` at the step that failed."""
        job.reset_for_retry()
        return job

    async def failed_job_ids(self, limit: int = 1000) -> Sequence[UUID]:
        """Ids of failed jobs, oldest first."""
        # Hand-written: one column for up to 100 000 ids (retry --all); get_many would load whole rows.
        stmt = (
            select(ExamProcessingJob.job_id)
            .where(ExamProcessingJob.status == "failed")
            .order_by(ExamProcessingJob.created_at)
            .limit(limit)
        )
        result = await self.repository.session.execute(stmt)
        return list(result.scalars().all())

    @staticmethod
    def _finished_before(cutoff: datetime) -> ColumnElement[bool]:
        return and_(
            ExamProcessingJob.completed_at < cutoff,
            ExamProcessingJob.status.in_(("completed", "failed", "cancelled")),
        )

    async def count_finished_before(self, cutoff: datetime) -> int:
        """How many finished jobs ended before ``cutoff``."""
        return await self.count(self._finished_before(cutoff))

    async def delete_finished_batch(self, cutoff: datetime, batch_size: int) -> int:
        """Delete at most ``batch_size`` jobs that finished before ``cutoff``; return how many."""
        # Hand-written: DELETE … IN (SELECT … LIMIT n); delete_where has no LIMIT and returns every row.
        ids = (
            select(ExamProcessingJob.id)
            .where(self._finished_before(cutoff))
            .order_by(ExamProcessingJob.completed_at)
            .limit(batch_size)
            .scalar_subquery()
        )
        stmt = delete(ExamProcessingJob).where(ExamProcessingJob.id.in_(ids))
        result = await self.repository.session.execute(stmt, execution_options={"synchronize_session": False})
        return int(getattr(result, "rowcount", 0) or 0)


class JobStatusView(Protocol):
    """The columns the status document shows (an ORM job or a row from :func:`fetch_status`)."""

    job_id: UUID
    exam_code: str
    student_id: str
    status: str
    progress: int
    current_step: str
    attempts: int
    result: dict[str, Any] | None
    error_message: str | None
    error_code: str | None
    error_params: dict[str, Any] | None
    created_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    owner: str | None


_STATUS_QUERY = select(
    *(
        getattr(ExamProcessingJob, name)
        for name in (
            "job_id",
            "exam_code",
            "student_id",
            "status",
            "progress",
            "current_step",
            "attempts",
            "result",
            "error_message",
            "error_code",
            "error_params",
            "created_at",
            "started_at",
            "completed_at",
            "owner",
        )
    )
).where(ExamProcessingJob.job_id == bindparam("job_id"))


async def fetch_status(connection: AsyncConnection, job_id: UUID) -> JobStatusView | None:
    """The status columns of one job, read without the ORM (the status endpoint's hot path)."""
    # Hand-written: Core select on the caller's autocommit connection, no ORM (hot path, see bench/run.py).
    # Built once with a bound parameter: SQLAlchemy then keeps its cache key and compiled form
    # (building the WHERE per request was a quarter of the route's CPU in a py-spy profile).
    row = (await connection.execute(_STATUS_QUERY, {"job_id": job_id})).first()
    return cast("JobStatusView | None", row)
