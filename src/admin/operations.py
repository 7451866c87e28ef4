"""Bulk work started from the dashboard, run in the background of the web process with progress:
retrying failed jobs and re-sending lost ones at a bounded rate, and the batched cleanup.

The audit entry is written when the work starts (what the operator confirmed); the operation's
progress and outcome are kept in memory for the page to show, and the cleanup's outcome is also
an audit entry (``cleanup.run``), which is what ``/metrics`` and the cleanup page read.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal
from uuid import UUID

import dramatiq
import structlog

from core.audit import record
from core.db import Database
from core.settings import Settings
from jobs.dispatch import JobRef, dispatch
from jobs.maintenance import CLEANUP_BATCH
from jobs.models import InvalidTransitionError, utcnow
from jobs.services import JobService

__all__ = ("Operation", "Operations")

log = structlog.get_logger("admin.operations")
Kind = Literal["retry", "requeue", "cleanup"]
#: Finished operations kept for the pages (the newest ones).
_KEEP = 20


@dataclass
class Operation:
    """One background operation and how far it got."""

    id: int
    kind: Kind
    actor: str
    total: int
    done: int = 0
    skipped: int = 0
    started_at: datetime = field(default_factory=utcnow)
    finished_at: datetime | None = None
    error: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def running(self) -> bool:
        """Whether it is still going."""
        return self.finished_at is None

    @property
    def percent(self) -> int:
        """Progress in percent (100 when there was nothing to do)."""
        if self.total <= 0:
            return 100 if not self.running else 0
        return min(100, int(100 * (self.done + self.skipped) / self.total))


class Operations:
    """The background operations of this web process."""

    def __init__(self, database: Database, broker: dramatiq.Broker, settings: Settings) -> None:
        self.database = database
        self.broker = broker
        self.settings = settings
        self._ops: dict[int, Operation] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._ids = itertools.count(1)

    def get(self, op_id: int) -> Operation | None:
        """One operation by id."""
        return self._ops.get(op_id)

    def recent(self, kind: Kind | None = None) -> list[Operation]:
        """Newest first."""
        return sorted((o for o in self._ops.values() if kind is None or o.kind == kind), key=lambda o: -o.id)

    def running(self, kind: Kind) -> Operation | None:
        """The running operation of this kind, if any."""
        return next((o for o in self.recent(kind) if o.running), None)

    def _start(self, op: Operation, work: Callable[[Operation], Awaitable[None]]) -> Operation:
        self._ops[op.id] = op
        for old in sorted(self._ops)[:-_KEEP]:
            if not self._ops[old].running:
                del self._ops[old]

        async def run() -> None:
            try:
                await work(op)
            except asyncio.CancelledError:
                op.error = "stopped: the web process shut down"
                raise
            except Exception as exc:
                op.error = f"{type(exc).__name__}: {exc}"
                log.exception("dashboard operation failed", kind=op.kind, operation=op.id)
            finally:
                op.finished_at = utcnow()

        task = asyncio.create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return op

    async def stop(self) -> None:
        """Cancel what is running (application shutdown)."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _paced(self, op: Operation, job_ids: Sequence[UUID], one: Callable[[UUID], Awaitable[bool]]) -> None:
        """Call ``one`` per job at most ``ADMIN_RETRY_RATE`` times a second."""
        interval = 1.0 / self.settings.admin_retry_rate
        next_at = time.monotonic()
        for job_id in job_ids:
            delay = next_at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            next_at = max(next_at + interval, time.monotonic())
            if await one(job_id):
                op.done += 1
            else:
                op.skipped += 1

    # --- retry -----------------------------------------------------------------------------------

    async def start_retry(self, actor: str, job_ids: Sequence[UUID], target: dict[str, Any]) -> Operation:
        """Audit, then re-queue failed jobs at the bounded rate (a job no longer failed is skipped)."""
        async with self.database.transaction() as session:
            await record(
                session,
                actor=actor,
                action="jobs.retry",
                target=target,
                count=len(job_ids),
                detail={"job_ids": [str(j) for j in job_ids[:1000]], "rate_per_second": self.settings.admin_retry_rate},
            )
        op = Operation(next(self._ids), "retry", actor, len(job_ids))

        async def retry_one(job_id: UUID) -> bool:
            async with self.database.transaction() as session:
                service = JobService(session=session)
                job = await service.get_by_job_id(job_id)
                if job is None:
                    return False
                try:
                    await service.retry(job)
                except InvalidTransitionError:
                    return False
                ref = JobRef.of(job)
            await dispatch(self.broker, self.database, [ref])
            return True

        return self._start(op, lambda o: self._paced(o, job_ids, retry_one))

    # --- requeue lost messages ---------------------------------------------------------------------

    async def start_requeue(
        self, actor: str, pending: Sequence[UUID], stalled: Sequence[UUID], target: dict[str, Any]
    ) -> Operation:
        """Audit, then send pending jobs again and free stalled ones for a new message, paced."""
        async with self.database.transaction() as session:
            await record(
                session,
                actor=actor,
                action="jobs.requeue",
                target=target,
                count=len(pending) + len(stalled),
                detail={
                    "pending": len(pending),
                    "stalled": len(stalled),
                    "job_ids": [str(j) for j in [*pending, *stalled][:1000]],
                },
            )
        op = Operation(next(self._ids), "requeue", actor, len(pending) + len(stalled))
        stalled_set = set(stalled)

        async def resend(job_id: UUID) -> bool:
            return await resend_job(self.database, self.broker, job_id, stalled=job_id in stalled_set)

        return self._start(op, lambda o: self._paced(o, [*pending, *stalled], resend))

    # --- cleanup -----------------------------------------------------------------------------------

    async def start_cleanup(self, actor: str, retention_days: int, total: int) -> Operation:
        """Delete finished jobs older than the retention in batches; the outcome is audited."""
        cutoff = utcnow() - timedelta(days=retention_days)
        op = Operation(
            next(self._ids), "cleanup", actor, total, detail={"cutoff": cutoff.isoformat(), "days": retention_days}
        )

        async def work(o: Operation) -> None:
            started = time.monotonic()
            batches = 0
            try:
                while True:
                    async with self.database.transaction() as session:
                        deleted = await JobService(session=session).delete_finished_batch(cutoff, CLEANUP_BATCH)
                    batches += 1
                    o.done += deleted
                    o.total = max(o.total, o.done)
                    if deleted < CLEANUP_BATCH:
                        break
                    await asyncio.sleep(0.05)  # let concurrent writers in between batches
            finally:
                async with self.database.transaction() as session:
                    await record(
                        session,
                        actor=actor,
                        action="cleanup.run",
                        target={"finished_before": cutoff.isoformat(), "retention_days": retention_days},
                        count=o.done,
                        detail={
                            "trigger": "dashboard",
                            "batches": batches,
                            "seconds": round(time.monotonic() - started, 3),
                            "complete": o.done >= o.total,
                        },
                    )

        return self._start(op, work)


async def resend_job(database: Database, broker: dramatiq.Broker, job_id: UUID, *, stalled: bool) -> bool:
    """Send one pending job again, or free one stalled job and send it; ``False`` if it moved on."""
    async with database.transaction() as session:
        service = JobService(session=session)
        job = await service.get_by_job_id(job_id)
        if job is None or job.is_finished:
            return False
        if stalled:
            if job.status != "processing" or not await service.release_stalled(job.job_id, job.version):
                return False
        elif job.status != "pending":
            return False
        ref = JobRef.of(job)
    return bool(await dispatch(broker, database, [ref]))
