"""Gauges read at scrape time from the database and the broker, cached for a few seconds.

The queries are index lookups (``status, created_at``; ``heartbeat_at``), so a scrape stays
cheap with a million job rows. A broker or database outage never fails the scrape: the
``exams_broker_up`` / ``exams_database_up`` gauges say what could not be read.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta

import anyio
import anyio.to_thread
import dramatiq
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from core.db import Database
from core.settings import Settings
from jobs.broker import QUEUE_NAME
from jobs.heartbeat import LIVE_SECONDS
from jobs.models import ExamProcessingJob, WorkerHeartbeat, utcnow

__all__ = ("MonitoringCache", "Snapshot", "SnapshotCollector", "queue_counts")

CACHE_SECONDS = 5.0
COMPLETED_RECOUNT_SECONDS = 60.0
COMPLETED_RECOUNT_ABOVE = 100_000
BROKER_TIMEOUT = 3.0
STATUSES = ("pending", "processing", "completed", "failed", "cancelled")


@dataclass
class Snapshot:
    """What the gauges show at one moment."""

    database_up: bool = False
    broker_up: bool = False
    jobs: dict[str, int] = field(default_factory=dict)
    oldest_pending_seconds: float = 0.0
    stalled: int = 0
    workers: int = 0
    queue: dict[str, int] = field(default_factory=dict)


def queue_counts(broker: dramatiq.Broker) -> dict[str, int]:
    """Ready, delayed and dead messages of the exams queue (blocking)."""
    name = type(broker).__name__
    if name == "RedisBroker":
        client = broker.client  # type: ignore[attr-defined]
        ns = broker.namespace  # type: ignore[attr-defined]
        pipe = client.pipeline(transaction=False)
        pipe.llen(f"{ns}:{QUEUE_NAME}")
        pipe.llen(f"{ns}:{QUEUE_NAME}.DQ")
        pipe.zcard(f"{ns}:{QUEUE_NAME}.XQ")
        ready, delayed, dead = pipe.execute()
    elif name == "RabbitmqBroker":
        ready, delayed, dead = broker.get_queue_message_counts(QUEUE_NAME)  # type: ignore[attr-defined]
    else:
        queues = getattr(broker, "queues", {})
        ready = queues[QUEUE_NAME].qsize() if QUEUE_NAME in queues else 0
        delayed = queues[f"{QUEUE_NAME}.DQ"].qsize() if f"{QUEUE_NAME}.DQ" in queues else 0
        dead = len(getattr(broker, "dead_letters_by_queue", {}).get(QUEUE_NAME, []))
    return {"ready": int(ready), "delayed": int(delayed), "dead": int(dead)}


class MonitoringCache:
    """Computes a :class:`Snapshot` at most every few seconds, however many scrapes arrive."""

    def __init__(self, database: Database, broker: dramatiq.Broker, settings: Settings) -> None:
        self.sessions = database.sessions
        self.broker = broker
        self.settings = settings
        self._snapshot: Snapshot | None = None
        self._taken_at = 0.0
        self._lock = asyncio.Lock()
        self._completed = 0
        self._completed_due = float("-inf")

    async def get(self) -> Snapshot:
        """The current snapshot (recomputed when older than a few seconds)."""
        async with self._lock:
            if self._snapshot is None or time.monotonic() - self._taken_at > CACHE_SECONDS:
                self._snapshot = await self._take()
                self._taken_at = time.monotonic()
            return self._snapshot

    async def _job_counts(self, session: AsyncSession) -> dict[str, int]:
        # Completed jobs are most of the table (a million rows after a busy week, ~175 ms to
        # count): past COMPLETED_RECOUNT_ABOVE rows they are recounted once a minute. The other
        # statuses are small ranges of the (status, created_at) index and are counted every time.
        # The rule depends on the count, not on how long one count took: a single slow query on
        # a loaded machine must not freeze a small table's gauge for a minute.
        recount_completed = time.monotonic() >= self._completed_due
        wanted = STATUSES if recount_completed else tuple(s for s in STATUSES if s != "completed")
        rows = await session.execute(
            select(ExamProcessingJob.status, func.count())
            .where(ExamProcessingJob.status.in_(wanted))
            .group_by(ExamProcessingJob.status)
        )
        counts = {str(status): int(count) for status, count in rows.all()}
        if recount_completed:
            self._completed = counts.get("completed", 0)
            large = self._completed > COMPLETED_RECOUNT_ABOVE
            self._completed_due = time.monotonic() + COMPLETED_RECOUNT_SECONDS if large else float("-inf")
        counts["completed"] = self._completed
        return {status: counts.get(status, 0) for status in STATUSES}

    async def _take(self) -> Snapshot:
        snapshot = Snapshot()
        try:
            async with asyncio.timeout(BROKER_TIMEOUT), self.sessions() as session:
                now = utcnow()
                snapshot.jobs = await self._job_counts(session)
                oldest = (
                    await session.execute(
                        select(func.min(ExamProcessingJob.created_at)).where(ExamProcessingJob.status == "pending")
                    )
                ).scalar_one_or_none()
                if oldest is not None:
                    if oldest.tzinfo is None:  # SQLite hands back naive UTC
                        oldest = oldest.replace(tzinfo=now.tzinfo)
                    snapshot.oldest_pending_seconds = max((now - oldest).total_seconds(), 0.0)
                stale = now - timedelta(seconds=self.settings.job_stale_after)
                snapshot.stalled = int(
                    (
                        await session.execute(
                            select(func.count())
                            .select_from(ExamProcessingJob)
                            .where(ExamProcessingJob.status == "processing", ExamProcessingJob.heartbeat_at < stale)
                        )
                    ).scalar_one()
                )
                snapshot.workers = int(
                    (
                        await session.execute(
                            select(func.count())
                            .select_from(WorkerHeartbeat)
                            .where(WorkerHeartbeat.heartbeat_at >= now - timedelta(seconds=LIVE_SECONDS))
                        )
                    ).scalar_one()
                )
                snapshot.database_up = True
        except Exception:  # noqa: BLE001  (reported through exams_database_up)
            snapshot.database_up = False
        try:
            with anyio.fail_after(BROKER_TIMEOUT):
                snapshot.queue = await anyio.to_thread.run_sync(queue_counts, self.broker, abandon_on_cancel=True)
            snapshot.broker_up = True
        except Exception:  # noqa: BLE001  (reported through exams_broker_up)
            snapshot.broker_up = False
        return snapshot


class SnapshotCollector(Collector):
    """Exposes one :class:`Snapshot` as Prometheus gauges."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """Yield the gauges of SPEC.md, plus whether the database and broker could be read."""
        s = self.snapshot
        yield GaugeMetricFamily("exams_database_up", "1 when the database answered the last scrape.", s.database_up)
        yield GaugeMetricFamily("exams_broker_up", "1 when the broker answered the last scrape.", s.broker_up)
        if s.database_up:
            jobs = GaugeMetricFamily("exams_jobs", "Job rows by status now.", labels=["status"])
            for status in STATUSES:
                jobs.add_metric([status], s.jobs.get(status, 0))
            yield jobs
            yield GaugeMetricFamily(
                "exams_jobs_oldest_pending_seconds",
                "Age of the oldest pending job (0 when none).",
                s.oldest_pending_seconds,
            )
            yield GaugeMetricFamily(
                "exams_jobs_stalled", "Processing jobs whose heartbeat is older than JOB_STALE_AFTER.", s.stalled
            )
            yield GaugeMetricFamily("exams_workers", "Worker processes with a live heartbeat.", s.workers)
        if s.broker_up:
            queue = GaugeMetricFamily("exams_queue_messages", "Messages in the exams queue by state.", labels=["state"])
            for state in ("ready", "delayed", "dead"):
                queue.add_metric([state], s.queue.get(state, 0))
            yield queue
