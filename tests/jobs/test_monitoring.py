"""The scrape-time gauges (``exams_jobs`` and friends) on real SQLite and real PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from dramatiq.brokers.stub import StubBroker

import jobs.monitoring
from core.db import Database
from core.settings import Settings
from jobs.models import ExamProcessingJob
from jobs.monitoring import MonitoringCache


class SlowSession:
    """A session whose every statement takes at least 50 ms, as on a loaded machine."""

    def __init__(self, session: Any) -> None:
        self._session = session

    async def execute(self, *args: Any, **kwargs: Any) -> Any:
        await asyncio.sleep(0.05)
        return await self._session.execute(*args, **kwargs)


async def _add_completed(db: Database, count: int) -> None:
    async with db.transaction() as session:
        session.add_all(
            ExamProcessingJob(exam_code="MATH-101", student_id=f"s-{i}", answers={}, status="completed", progress=100)
            for i in range(count)
        )


async def test_completed_jobs_are_recounted_until_the_table_is_large(
    db: Database, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(jobs.monitoring, "CACHE_SECONDS", 0.0)
    monkeypatch.setattr(jobs.monitoring, "COMPLETED_RECOUNT_ABOVE", 3)
    cache = MonitoringCache(db, StubBroker(), settings)
    real_sessions = db.sessions

    @asynccontextmanager
    async def slow_sessions() -> AsyncIterator[Any]:
        async with real_sessions() as session:
            yield SlowSession(session)

    cache.sessions = slow_sessions  # type: ignore[assignment]

    # A slow count of a small table does not freeze the gauge: each snapshot recounts.
    assert (await cache.get()).jobs["completed"] == 0
    await _add_completed(db, 2)
    assert (await cache.get()).jobs["completed"] == 2
    await _add_completed(db, 2)
    assert (await cache.get()).jobs["completed"] == 4
    # Past the threshold, completed jobs are recounted once a minute; the others every time.
    await _add_completed(db, 1)
    async with db.transaction() as session:
        session.add(ExamProcessingJob(exam_code="MATH-101", student_id="p", answers={}, status="pending"))
    snapshot = await cache.get()
    assert snapshot.jobs["completed"] == 4
    assert snapshot.jobs["pending"] == 1
    assert snapshot.database_up
    assert snapshot.broker_up
