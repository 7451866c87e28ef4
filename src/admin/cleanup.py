"""What the cleanup did, read from the audit log: for the cleanup page and for ``/metrics``.

Every cleanup run (the scheduler's daily one, the dashboard's, ``exams jobs cleanup``) writes a
``cleanup.run`` audit entry, so the figures hold across processes and restarts, and an alert on
``exams_cleanup_last_run_timestamp_seconds`` notices a cleanup that stopped running.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from core.audit import AuditEntry
from core.db import Database

__all__ = ("CLEANUP_ACTION", "CleanupCollector", "CleanupFigures", "CleanupMonitor", "cleanup_figures")

CLEANUP_ACTION = "cleanup.run"
_CACHE_SECONDS = 5.0


@dataclass
class CleanupFigures:
    """The last cleanup run and the totals of every run."""

    last: AuditEntry | None = None
    runs: int = 0
    deleted_total: int = 0
    readable: bool = True

    @property
    def last_run_at(self) -> datetime | None:
        """When the last run ended."""
        return self.last.created_at if self.last is not None else None


async def cleanup_figures(session: AsyncSession) -> CleanupFigures:
    """The last ``cleanup.run`` entry, and how many runs deleted how many rows in all."""
    last = (
        await session.execute(
            select(AuditEntry)
            .where(AuditEntry.action == CLEANUP_ACTION)
            .order_by(AuditEntry.created_at.desc(), AuditEntry.id.desc())
            .limit(1)
        )
    ).scalar_one_or_none()
    runs, deleted = (
        await session.execute(
            select(func.count(), func.coalesce(func.sum(AuditEntry.count), 0)).where(
                AuditEntry.action == CLEANUP_ACTION
            )
        )
    ).one()
    return CleanupFigures(last, int(runs), int(deleted))


class CleanupMonitor:
    """:func:`cleanup_figures` cached for a few seconds, for ``/metrics`` scrapes."""

    def __init__(self, database: Database) -> None:
        self.database = database
        self._figures: CleanupFigures | None = None
        self._taken_at = 0.0
        self._lock = asyncio.Lock()

    async def get(self) -> CleanupFigures:
        """The figures (a database outage gives ``readable=False``, never an error)."""
        async with self._lock:
            if self._figures is None or time.monotonic() - self._taken_at > _CACHE_SECONDS:
                try:
                    async with asyncio.timeout(3.0), self.database.sessions() as session:
                        self._figures = await cleanup_figures(session)
                except Exception:  # noqa: BLE001  (the scrape reports exams_database_up instead)
                    self._figures = CleanupFigures(readable=False)
                self._taken_at = time.monotonic()
            return self._figures


class CleanupCollector(Collector):
    """The cleanup's metrics: when it last ran, what that run deleted, and all it ever deleted."""

    def __init__(self, figures: CleanupFigures) -> None:
        self.figures = figures

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        """Nothing when the database could not be read (``exams_database_up`` says so)."""
        f = self.figures
        if not f.readable:
            return
        last_at = f.last_run_at.timestamp() if f.last_run_at is not None else 0.0
        yield GaugeMetricFamily(
            "exams_cleanup_last_run_timestamp_seconds",
            "When the last cleanup of finished jobs ended (Unix time; 0 when it never ran).",
            last_at,
        )
        yield GaugeMetricFamily(
            "exams_cleanup_last_deleted",
            "Jobs the last cleanup deleted.",
            (f.last.count or 0) if f.last is not None else 0,
        )
        yield CounterMetricFamily(
            "exams_cleanup_deleted", "Jobs deleted by every recorded cleanup run.", f.deleted_total
        )
