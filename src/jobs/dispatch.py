"""Handing stored jobs to the broker, and the reconciler that re-sends what no worker will run.

The ``exam_processing_jobs`` row is the outbox: a submission is committed first, then sent. If
the broker is down the row stays ``pending`` with no ``enqueued_at``, and :func:`reconcile`
sends it once the broker is back. It also re-sends ``processing`` jobs whose worker stopped
sending heartbeats (killed, or its host lost). A duplicate message is harmless: only one
worker can claim a job, and a finished job is skipped.
"""

from __future__ import annotations

from collections.abc import Sequence
from uuid import UUID

import anyio.to_thread
import dramatiq
import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

from core.db import session_scope
from core.settings import Settings
from jobs.actors import send_job
from jobs.services import JobService

__all__ = ("dispatch", "reconcile", "requeue_unfinished")

log = structlog.get_logger("jobs.dispatch")

#: A pending job not handed to the broker this long after submission is sent by the reconciler.
UNSENT_AFTER_SECONDS = 5.0


def _send_all(broker: dramatiq.Broker, job_ids: Sequence[UUID]) -> list[UUID]:
    sent: list[UUID] = []
    for job_id in job_ids:
        try:
            send_job(broker, job_id)
        except Exception as exc:  # noqa: BLE001  (any broker failure: keep the row for the reconciler)
            log.warning("exam processing enqueue failed", job_id=str(job_id), error=f"{type(exc).__name__}: {exc}")
            break
        sent.append(job_id)
    return sent


async def dispatch(broker: dramatiq.Broker, engine: AsyncEngine, job_ids: Sequence[UUID]) -> list[UUID]:
    """Send messages for ``job_ids`` (off the event loop) and record which reached the broker."""
    sent = await anyio.to_thread.run_sync(_send_all, broker, list(job_ids))
    if sent:
        async with session_scope(engine) as session:
            await JobService(session=session).mark_enqueued(sent)
    return sent


async def reconcile(broker: dramatiq.Broker, engine: AsyncEngine, settings: Settings) -> int:
    """Re-send jobs that no worker will pick up; return how many were sent."""
    async with session_scope(engine) as session:
        service = JobService(session=session)
        jobs = await service.needing_dispatch(stale_after=settings.job_stale_after, unsent_after=UNSENT_AFTER_SECONDS)
        stalled = {job.job_id: job.version for job in jobs if job.status == "processing"}
        attempts = {job.job_id: job.attempts for job in jobs}
        # Free stalled jobs first (a conditional write: a worker that woke up keeps its job), so
        # the message finds them claimable, and they are not re-sent for another stale period.
        freed = [job_id for job_id, version in stalled.items() if await service.release_stalled(job_id, version)]
        pending = [job.job_id for job in jobs if job.status == "pending"]
        ids = pending + freed
    sent = await anyio.to_thread.run_sync(_send_all, broker, ids)
    if sent:
        async with session_scope(engine) as session:
            await JobService(session=session).mark_enqueued(sent)
    for job_id in freed:
        log.warning("exam processing stalled, re-sent", job_id=str(job_id), attempt=attempts[job_id])
    if sent:
        log.info("reconciler re-sent jobs", count=len(sent))
    return len(sent)


async def requeue_unfinished(broker: dramatiq.Broker, engine: AsyncEngine) -> int:
    """Embedded start-up: the in-memory queue is empty, so send every unfinished job again."""
    async with session_scope(engine) as session:
        jobs = await JobService(session=session).unfinished()
        for job in jobs:
            if job.status == "processing":
                job.heartbeat_at = None
            job.enqueued_at = None
    ids = [job.job_id for job in jobs]
    sent = await dispatch(broker, engine, ids) if ids else []
    if ids:
        log.info("unfinished jobs picked up again", count=len(sent), of=len(ids))
    return len(sent)
