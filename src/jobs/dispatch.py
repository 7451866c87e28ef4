"""Handing stored jobs to the broker, and the reconciler that re-sends what no worker will run.

The ``exam_processing_jobs`` row is the outbox: a submission is committed first, then sent. If
the broker is down the row stays ``pending`` with no ``enqueued_at``, and :func:`reconcile`
sends it once the broker is back. It also re-sends ``processing`` jobs whose worker stopped
sending heartbeats (killed, or its host lost). A duplicate message is harmless: only one
worker can claim a job, and a finished job is skipped.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple
from uuid import UUID

import anyio.to_thread
import dramatiq
import structlog

from core.db import Database
from core.settings import Settings
from jobs.actors import send_callback, send_job
from jobs.broker import broker_lost_messages
from jobs.callbacks import due_deliveries
from jobs.models import ExamProcessingJob
from jobs.services import PENDING_RESEND_AFTER, JobService

__all__ = ("JobRef", "dispatch", "reconcile", "requeue_unfinished", "resend_due_callbacks", "send_callbacks")

log = structlog.get_logger("jobs.dispatch")

#: A pending job not handed to the broker this long after submission is sent by the reconciler.
UNSENT_AFTER_SECONDS = 5.0
#: A callback delivery this long past its attempt's time lost its message: it is sent again.
CALLBACK_OVERDUE_SECONDS = 120.0


class JobRef(NamedTuple):
    """What sending a job needs, and what its log lines carry."""

    job_id: UUID
    exam_code: str
    step: str
    attempt: int

    @classmethod
    def of(cls, job: ExamProcessingJob) -> JobRef:
        """The reference of a loaded job."""
        return cls(job.job_id, job.exam_code, job.current_step, job.attempts)

    def log_fields(self) -> dict[str, object]:
        """The fields every log line of a job carries."""
        return {"job_id": str(self.job_id), "exam_code": self.exam_code, "step": self.step, "attempt": self.attempt}


def _send_all(broker: dramatiq.Broker, jobs: Sequence[JobRef]) -> list[UUID]:
    sent: list[UUID] = []
    for ref in jobs:
        try:
            send_job(broker, ref.job_id)
        except Exception as exc:  # noqa: BLE001  (any broker failure: keep the row for the reconciler)
            log.warning("exam processing enqueue failed", **ref.log_fields(), error=f"{type(exc).__name__}: {exc}")
            break
        sent.append(ref.job_id)
    return sent


async def dispatch(
    broker: dramatiq.Broker, database: Database, jobs: Sequence[JobRef], *, presumed_sent: bool = False
) -> list[UUID]:
    """Send messages for ``jobs`` (off the event loop) and record which reached the broker.

    ``presumed_sent``: the rows were stored with ``enqueued_at`` already set (the submit path,
    which saves a second transaction per request), so only a failed send is written back. A
    web process dying between its commit and its send leaves such a row for the reconciler's
    long-pending pass.
    """
    sent = await anyio.to_thread.run_sync(_send_all, broker, list(jobs))
    if presumed_sent:
        unsent = [ref.job_id for ref in jobs if ref.job_id not in set(sent)]
        if unsent:
            async with database.transaction() as session:
                await JobService(session=session).mark_unsent(unsent)
    elif sent:
        async with database.transaction() as session:
            await JobService(session=session).mark_enqueued(sent)
    return sent


async def reconcile(broker: dramatiq.Broker, database: Database, settings: Settings, *, stalled: bool = True) -> int:
    """Re-send jobs that no worker will pick up; return how many were sent.

    When the broker lost its messages (a Redis restarted empty), every job waiting for one is
    sent again at once. ``stalled=False`` leaves ``processing`` jobs alone (right after an
    outage, when every heartbeat looks stale).
    """
    lost = await anyio.to_thread.run_sync(broker_lost_messages, broker)
    if lost:
        log.warning("broker lost its messages: sending every waiting job again")
    async with database.transaction() as session:
        service = JobService(session=session)
        jobs = await service.needing_dispatch(
            stale_after=settings.job_stale_after,
            unsent_after=UNSENT_AFTER_SECONDS,
            resend_after=0.0 if lost else PENDING_RESEND_AFTER,
        )
        # Free stalled jobs first (a conditional write: a worker that woke up keeps its job), so
        # the message finds them claimable, and they are not re-sent for another stale period.
        freed = [
            JobRef.of(job)
            for job in jobs
            if stalled and job.status == "processing" and await service.release_stalled(job.job_id, job.version)
        ]
        refs = [JobRef.of(job) for job in jobs if job.status == "pending"] + freed
    sent = await anyio.to_thread.run_sync(_send_all, broker, refs)
    if sent:
        async with database.transaction() as session:
            await JobService(session=session).mark_enqueued(sent)
    for ref in freed:
        log.warning("exam processing stalled, re-sent", **ref.log_fields())
    if sent:
        log.info("reconciler re-sent jobs", count=len(sent))
    return len(sent)


async def requeue_unfinished(broker: dramatiq.Broker, database: Database) -> int:
    """Embedded start-up: the in-memory queue is empty, so send every unfinished job again."""
    async with database.transaction() as session:
        jobs = await JobService(session=session).unfinished()
        for job in jobs:
            if job.status == "processing":
                job.heartbeat_at = None
            job.enqueued_at = None
    refs = [JobRef.of(job) for job in jobs]
    sent = await dispatch(broker, database, refs) if refs else []
    if refs:
        log.info("unfinished jobs picked up again", count=len(sent), of=len(refs))
    return len(sent)


def _send_callbacks(broker: dramatiq.Broker, delivery_ids: Sequence[UUID]) -> int:
    sent = 0
    for delivery_id in delivery_ids:
        try:
            send_callback(broker, delivery_id)
        except Exception as exc:  # noqa: BLE001  (any broker failure: the row stays due)
            log.warning(
                "exam callback enqueue failed", delivery_id=str(delivery_id), error=f"{type(exc).__name__}: {exc}"
            )
            break
        sent += 1
    return sent


async def send_callbacks(broker: dramatiq.Broker, delivery_ids: Sequence[UUID]) -> int:
    """Hand committed callback deliveries to the broker (off the event loop); a failure leaves
    them due for :func:`resend_due_callbacks`."""
    return await anyio.to_thread.run_sync(_send_callbacks, broker, list(delivery_ids)) if delivery_ids else 0


async def resend_due_callbacks(broker: dramatiq.Broker, database: Database) -> int:
    """The callback outbox pass: send again deliveries whose message was lost (or never sent)."""
    async with database.transaction() as session:
        ids = await due_deliveries(session, overdue=CALLBACK_OVERDUE_SECONDS)
    sent = await send_callbacks(broker, ids)
    if sent:
        log.info("reconciler re-sent callbacks", count=sent)
    return sent
