"""Cancelling a job: ``pending`` or ``processing`` becomes ``cancelled`` (terminal), once.

The change goes through the row's version column like every other write, so it races safely
with a worker: a worker's next write (a step boundary, or the AI wait's tick every second) fails,
sees ``cancelled`` and stops (``jobs.pipeline``); a worker that completed or failed the job first
wins, and the cancel answers ``already finished``. The callback delivery, if the job has a
``callback_url``, commits with the cancel.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from uuid import UUID

import structlog
from sqlalchemy.orm.exc import StaleDataError

from core import metrics
from core.db import Database
from core.errors import AlreadyFinishedError, ServiceUnavailableError
from jobs.callbacks import new_delivery
from jobs.models import ExamProcessingJob, utcnow
from jobs.services import JobService

__all__ = ("Cancellation", "cancel_job")

log = structlog.get_logger("jobs.cancel")

#: Tries when a worker writes the row between our read and our commit, and the longest pause
#: between two (a worker busy with quick steps writes several times within milliseconds).
_TRIES = 6
_MAX_PAUSE = 0.2


@dataclass(frozen=True)
class Cancellation:
    """The job after the cancel, whether this call changed it, and its callback delivery, if any."""

    job: ExamProcessingJob
    changed: bool
    delivery_id: UUID | None


async def cancel_job(database: Database, job_id: UUID) -> Cancellation | None:
    """Cancel the job; ``None`` when unknown. Raises :class:`AlreadyFinishedError` (409) when it
    completed or failed; an already cancelled job is returned unchanged. Raises
    :class:`ServiceUnavailableError` (503) when a worker kept writing the row every time."""
    for attempt in range(1, _TRIES + 1):
        try:
            async with database.transaction() as session:
                job = await JobService(session=session).get_by_job_id(job_id)
                if job is None:
                    return None
                if job.status == "cancelled":
                    return Cancellation(job, changed=False, delivery_id=None)
                if job.is_finished:
                    raise AlreadyFinishedError(job_id=str(job_id), status=job.status)
                now = utcnow()
                job.mark_cancelled(now)
                delivery = new_delivery(job, now)
                if delivery is not None:
                    session.add(delivery)
        except StaleDataError:
            if attempt == _TRIES:
                raise ServiceUnavailableError from None
            await asyncio.sleep(random.uniform(0, min(_MAX_PAUSE, 0.01 * 2**attempt)))
            continue
        metrics.JOBS_FINISHED.labels(status="cancelled").inc()
        metrics.JOB_DURATION.observe((utcnow() - job.created_at).total_seconds())
        log.info(
            "exam processing cancelled",
            job_id=str(job.job_id),
            exam_code=job.exam_code,
            step=job.failed_step,
            attempt=job.attempts,
            progress=job.progress,
        )
        return Cancellation(job, changed=True, delivery_id=delivery.delivery_id if delivery else None)
    return None  # pragma: no cover  (the loop returns or raises)
