"""Periodic work on jobs: the reconciler pass and the daily cleanup, in one scheduler loop.

The reconciler pass also re-sends completion callbacks whose message was lost (their rows are
the outbox). The daily cleanup deletes finished jobs after ``JOB_RETENTION_DAYS`` (with their
finished callback deliveries) and, separately, results after ``RESULTS_RETENTION_DAYS`` (``0``:
never); the job cleanup never touches ``exam_results``.

The loop runs in ``exams scheduler`` (production: behind a leader lock, so two schedulers
never double the work) and inside ``exams serve`` in embedded mode (the in-memory queue lives
there, so only that process can re-send its jobs).
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import dramatiq
import structlog
from sqlalchemy import delete, select

from core.audit import record
from core.db import Database
from core.metrics import SCHEDULER_LAST_RUN
from core.retry import is_connection_problem
from core.settings import Settings
from jobs.dispatch import reconcile, resend_due_callbacks
from jobs.leader import LeaderLock
from jobs.models import CallbackDelivery, utcnow
from jobs.results import delete_results_before, retention_cutoff
from jobs.services import JobService

__all__ = (
    "CLEANUP_BATCH",
    "cleanup_deliveries",
    "cleanup_finished",
    "cleanup_results",
    "daily_cleanup",
    "run_scheduler",
)

log = structlog.get_logger("jobs.maintenance")
CLEANUP_BATCH = 1000
DAY_SECONDS = 86_400.0


async def cleanup_finished(database: Database, older_than_days: int, *, dry_run: bool) -> int:
    """Delete finished jobs older than the cutoff in small batches (short locks); return the count."""
    cutoff = utcnow() - timedelta(days=older_than_days)
    if dry_run:
        async with database.transaction() as session:
            return await JobService(session=session).count_finished_before(cutoff)
    total = 0
    while True:
        async with database.transaction() as session:
            deleted = await JobService(session=session).delete_finished_batch(cutoff, CLEANUP_BATCH)
        total += deleted
        if deleted < CLEANUP_BATCH:
            return total
        await asyncio.sleep(0.05)  # let concurrent writers in between batches


async def cleanup_results(database: Database, retention_days: int) -> int:
    """Delete results graded more than ``retention_days`` ago in small batches (``0``: none)."""
    cutoff = retention_cutoff(retention_days)
    if cutoff is None:
        return 0
    total = 0
    while True:
        async with database.transaction() as session:
            deleted = await delete_results_before(session, cutoff, CLEANUP_BATCH)
        total += deleted
        if deleted < CLEANUP_BATCH:
            return total
        await asyncio.sleep(0.05)


async def cleanup_deliveries(database: Database, older_than_days: int) -> int:
    """Delete delivered or given-up callback deliveries created more than N days ago."""
    cutoff = utcnow() - timedelta(days=older_than_days)
    total = 0
    while True:
        async with database.transaction() as session:
            ids = (
                select(CallbackDelivery.id)
                .where(CallbackDelivery.created_at < cutoff, CallbackDelivery.state.in_(("delivered", "gave_up")))
                .limit(CLEANUP_BATCH)
                .scalar_subquery()
            )
            result = await session.execute(
                delete(CallbackDelivery).where(CallbackDelivery.id.in_(ids)),
                execution_options={"synchronize_session": False},
            )
        deleted = int(getattr(result, "rowcount", 0) or 0)
        total += deleted
        if deleted < CLEANUP_BATCH:
            return total
        await asyncio.sleep(0.05)


async def daily_cleanup(database: Database, settings: Settings, *, actor: str = "scheduler") -> int:
    """Delete finished jobs older than ``JOB_RETENTION_DAYS``, log and audit how many.

    The ``cleanup.run`` audit entry is what the dashboard and ``exams_cleanup_*`` metrics read.
    """
    started = utcnow()
    deleted = await cleanup_finished(database, settings.job_retention_days, dry_run=False)
    log.info("cleanup finished", deleted=deleted, older_than_days=settings.job_retention_days)
    # Separate retentions: finished callback deliveries go with the jobs, results have their own.
    deliveries = await cleanup_deliveries(database, settings.job_retention_days)
    results = await cleanup_results(database, settings.results_retention_days)
    log.info(
        "results cleanup finished",
        results_deleted=results,
        results_retention_days=settings.results_retention_days,
        callback_deliveries_deleted=deliveries,
    )
    async with database.transaction() as session:
        await record(
            session,
            actor=actor,
            action="cleanup.run",
            target={
                "finished_before": (started - timedelta(days=settings.job_retention_days)).isoformat(),
                "retention_days": settings.job_retention_days,
            },
            count=deleted,
            detail={"trigger": actor, "seconds": round((utcnow() - started).total_seconds(), 3), "complete": True},
        )
    return deleted


async def run_scheduler(
    database: Database,
    broker: dramatiq.Broker | None,
    settings: Settings,
    *,
    lock: LeaderLock | None = None,
    reconcile_every: float = 10.0,
    cleanup_every: float = DAY_SECONDS,
    first_cleanup_after: float = 0.0,
) -> None:
    """Reconcile every few seconds and clean up daily, forever (while holding ``lock``, if any).

    ``broker`` ``None``: cleanup only (an embedded-mode scheduler process cannot reach the web
    process's in-memory queue). A pass that fails (database or broker away) is logged and the
    loop goes on. Each pass a leader completes sets ``exams_scheduler_last_run_timestamp_seconds``.

    Stalled jobs (a stale heartbeat) are freed only once passes have worked for
    ``JOB_STALE_AFTER`` seconds in a row, after start-up and after every failed pass: a
    database that was away froze every running job's heartbeat too, and the workers holding those
    jobs need that long to reach it again and carry on, rather than see them taken over.
    """
    loop = asyncio.get_running_loop()
    next_cleanup = loop.time() + first_cleanup_after
    leading: bool | None = None if lock is not None else True
    #: When passes began to work (again); ``None`` after a failed pass.
    working_since: float | None = None
    try:
        while True:
            if working_since is None:
                working_since = loop.time()
            try:
                if lock is not None:
                    now_leading = await lock.ensure()
                    if now_leading != leading:
                        log.info("scheduler leadership", leading=now_leading)
                        leading = now_leading
                if leading:
                    if broker is not None:
                        settled = loop.time() - working_since >= settings.job_stale_after
                        await reconcile(broker, database, settings, stalled=settled)
                        await resend_due_callbacks(broker, database)
                    if loop.time() >= next_cleanup:
                        await daily_cleanup(database, settings)
                        next_cleanup = loop.time() + cleanup_every
                    # Liveness for ExamSchedulerDown: only a leader's pass that did its work counts.
                    SCHEDULER_LAST_RUN.set_to_current_time()
            except Exception as exc:  # keep scheduling through outages; each failure is logged
                if is_connection_problem(exc):  # an outage, not a bug: one line, no traceback
                    log.warning("scheduler pass failed", error=f"{type(exc).__name__}: {exc}"[:300])
                else:
                    log.exception("scheduler pass failed")
                working_since = None
            await asyncio.sleep(reconcile_every)
    finally:
        if lock is not None:
            await lock.release()
