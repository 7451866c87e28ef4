"""The dashboard's job queries on real SQLite and real PostgreSQL: keyset pages, filters,
failure groups (by error code and step), hourly counts, timings, lost jobs, callback deliveries
and the cleanup figures.

PostgreSQL is required: the ``pg_url`` fixture fails (never skips) when it is down.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import pytest

import jobs.admin_queries
from admin.cleanup import cleanup_figures
from core.audit import record
from core.db import Database
from core.settings import Settings, load_settings
from jobs.admin_queries import (
    RETRYABLE_STATUSES,
    Cursor,
    JobFilter,
    callback_deliveries,
    count_matching,
    delete_jobs,
    failed_among,
    failure_groups,
    finished_since,
    hourly_counts,
    job_ids_matching,
    list_jobs,
    lost_job_ids,
    normalise_error,
    recent_timings,
)
from jobs.errors import JobError
from jobs.models import CallbackDelivery, ExamProcessingJob, utcnow
from server.migrate import run_migrations
from support import NO_ENV_FILE, sqlite_url


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    url = sqlite_url(tmp_path) if request.param == "sqlite" else request.getfixturevalue("pg_url")
    migrated = load_settings({"DATABASE_URL": url}, env_file=NO_ENV_FILE)
    run_migrations(migrated)
    return migrated


def _job(i: int, **fields: object) -> ExamProcessingJob:
    now = utcnow()
    values: dict[str, object] = {
        "exam_code": "MATH-101" if i % 2 else "SCI-200",
        "student_id": f"s-{i}",
        "answers": {},
        "status": "completed",
        "current_step": "completed",
        "progress": 100,
        "created_at": now - timedelta(minutes=200 - i),
        "started_at": now - timedelta(minutes=200 - i) + timedelta(seconds=2),
        "completed_at": now - timedelta(minutes=200 - i) + timedelta(seconds=12),
    }
    values.update(fields)
    return ExamProcessingJob(**values)


async def _scenario(settings: Settings) -> None:
    database = Database.from_settings(settings)
    now = utcnow()
    try:
        async with database.transaction() as session:
            for i in range(120):
                if i % 10 == 0:
                    session.add(
                        _job(
                            i,
                            status="failed",
                            current_step="failed",
                            failed_step="getting_ai_recommendations",
                            error_message=f"gave up after {i % 3 + 1} attempts: AI request failed: HTTP 500",
                            failed_at=now - timedelta(minutes=200 - i),
                        )
                    )
                elif i % 10 == 1:
                    session.add(
                        _job(
                            i,
                            status="failed",
                            current_step="failed",
                            failed_step="validating_exam",
                            error_message="exam SCI-200 is closed",
                            failed_at=now,
                        )
                    )
                else:
                    session.add(_job(i))
            session.add(
                _job(
                    500,
                    status="pending",
                    current_step="queued",
                    completed_at=None,
                    started_at=None,
                    created_at=now - timedelta(hours=2),
                )
            )
            session.add(
                _job(
                    501,
                    status="processing",
                    current_step="processing_answers",
                    completed_at=None,
                    heartbeat_at=now - timedelta(minutes=10),
                    created_at=now - timedelta(minutes=30),
                )
            )
            session.add(
                _job(
                    502,
                    status="processing",
                    current_step="processing_answers",
                    completed_at=None,
                    heartbeat_at=now,
                    created_at=now - timedelta(minutes=1),
                )
            )

        async with database.sessions() as session:
            # Keyset pages: newest first, no duplicates, no gaps, same order as a full sort.
            seen: list[int] = []
            cursor: Cursor | None = None
            while True:
                page = await list_jobs(session, JobFilter(), stale_after=60, after=cursor, limit=25)
                seen.extend(job.id for job in page.jobs)
                if page.next_cursor is None:
                    break
                cursor = Cursor.decode(page.next_cursor.encode())
                assert cursor == page.next_cursor
            assert len(seen) == len(set(seen)) == 123
            everything = (await list_jobs(session, JobFilter(), stale_after=60, limit=500)).jobs
            assert seen == [job.id for job in everything]
            assert everything[0].created_at >= everything[-1].created_at

            failed = JobFilter(status="failed")
            assert await count_matching(session, failed, stale_after=60) == 24
            assert await count_matching(session, JobFilter(error="http 500"), stale_after=60) == 12
            assert await count_matching(session, JobFilter(error="50%_"), stale_after=60) == 0  # wildcards escaped
            assert await count_matching(session, JobFilter(exam_code="SCI-200", status="failed"), stale_after=60) == 12
            assert await count_matching(session, JobFilter(step="validating_exam"), stale_after=60) == 12
            assert await count_matching(session, JobFilter(stalled=True), stale_after=60) == 1
            since = JobFilter(since=now - timedelta(minutes=50))
            assert await count_matching(session, since, stale_after=60) == 2  # the two processing jobs
            groups = await failure_groups(session)
            # Equal counts: the group seen most recently comes first.
            assert [(g.step, g.count) for g in groups] == [("validating_exam", 12), ("getting_ai_recommendations", 12)]
            ai = groups[1]
            assert ai.code is None  # rows without an error code: grouped by the stripped message
            assert ai.cause == "gave up after # attempts: AI request failed: HTTP #"
            assert len(ai.messages) == 3
            assert ai.first_seen < ai.last_seen
            ids = await job_ids_matching(session, failed, stale_after=60, group=ai)
            assert len(ids) == 12
            assert len(await failed_among(session, ids[:5], failed_before=utcnow())) == 5
            assert await failed_among(session, ids[:5], failed_before=now - timedelta(days=1)) == []

            buckets = await hourly_counts(session, hours=24, now=now)
            assert len(buckets) == 24
            assert sum(b.submitted for b in buckets) == 123
            assert sum(b.completed for b in buckets) == 96
            assert sum(b.failed for b in buckets) == 24
            assert await finished_since(session, now - timedelta(days=1)) == {"completed": 96, "failed": 24}
            timings = await recent_timings(session, since=now - timedelta(days=1))
            assert timings.sample == 96
            assert timings.phases["waiting"][0] == pytest.approx(2.0, abs=0.01)
            assert timings.phases["total"][1] == pytest.approx(12.0, abs=0.01)
            pending, stalled = await lost_job_ids(session, pending_older_than=600, stalled_after=60)
            assert (len(pending), len(stalled)) == (1, 1)

        async with database.transaction() as session:
            assert await delete_jobs(session, ids, statuses=("failed",)) == 12
            await record(session, actor="scheduler", action="cleanup.run", count=7)
            await record(session, actor="ops", action="cleanup.run", count=3)
        async with database.sessions() as session:
            assert len(await failure_groups(session)) == 1
            figures = await cleanup_figures(session)
            assert (figures.runs, figures.deleted_total) == (2, 10)
            assert figures.last is not None
            assert figures.last.count == 3
    finally:
        await database.dispose()


def test_the_dashboard_queries(settings: Settings) -> None:
    asyncio.run(_scenario(settings))


def test_normalised_errors_drop_what_varies() -> None:
    assert normalise_error("job 0b9e4a8e-1c1f-4c3e-9a57-0e9f3c1d2b7a failed after 3.5 s") == "job <id> failed after # s"
    assert normalise_error(None) == ""
    assert Cursor.decode("not-a-cursor!") is None


def _failed(i: int, step: str, error: JobError | str, *, minutes_ago: float) -> ExamProcessingJob:
    """A job that failed in ``step`` with ``error`` (through the model's own transition)."""
    job = _job(i, status="processing", current_step=step, completed_at=None)
    job.mark_failed(error, utcnow() - timedelta(minutes=minutes_ago))
    return job


def _cancelled(i: int) -> ExamProcessingJob:
    job = _job(i, status="processing", current_step="processing_answers", completed_at=None)
    job.mark_cancelled(utcnow() - timedelta(minutes=1))
    return job


async def _groups_scenario(settings: Settings) -> None:
    ai_500 = JobError("ai_unavailable", {"reason": "HTTP 500"})
    ai_step = "getting_ai_recommendations"
    database = Database.from_settings(settings)
    try:
        async with database.transaction() as session:
            jobs = [
                # Same code and step, different attempts (so different messages): one group.
                _failed(1, ai_step, ai_500.exhausted(3), minutes_ago=30),
                _failed(2, ai_step, ai_500.exhausted(4), minutes_ago=5),
                # Same code, another step: another group.
                _failed(3, "finalizing_results", ai_500, minutes_ago=20),
                # retries_exhausted keeps its transient cause apart.
                _failed(
                    4,
                    "processing_answers",
                    JobError("temporary_error", {"reason": "reset"}).exhausted(3),
                    minutes_ago=9,
                ),
                _failed(
                    5,
                    "processing_answers",
                    JobError("database_unavailable", {"error": "gone"}).exhausted(3),
                    minutes_ago=8,
                ),
                # Rows stored before error codes: grouped by the stripped message.
                _failed(6, ai_step, "gave up after 3 attempts: AI request failed: HTTP 500", minutes_ago=40),
                _failed(7, ai_step, "gave up after 5 attempts: AI request failed: HTTP 500", minutes_ago=35),
                _cancelled(8),
            ]
            session.add_all(jobs)
            await session.flush()
            ids = {i + 1: job.job_id for i, job in enumerate(jobs)}
            for n, state in ((1, "pending"), (2, "delivered")):
                session.add(
                    CallbackDelivery(
                        job_id=ids[2],
                        student_id="s-2",
                        url="https://hooks.example.edu/x",
                        event="job.failed",
                        payload="{}",
                        state=state,
                        attempts=n,
                    )
                )
            session.add(
                CallbackDelivery(
                    job_id=ids[3],
                    student_id="s-3",
                    url="https://hooks.example.edu/y",
                    event="job.failed",
                    payload="{}",
                    state="gave_up",
                )
            )

        async with database.sessions() as session:
            groups = {(g.step, g.cause): g for g in await failure_groups(session)}
            assert {key: g.count for key, g in groups.items()} == {
                (ai_step, "ai_unavailable"): 2,
                ("finalizing_results", "ai_unavailable"): 1,
                ("processing_answers", "retries_exhausted:temporary_error"): 1,
                ("processing_answers", "retries_exhausted:database_unavailable"): 1,
                (ai_step, "gave up after # attempts: AI request failed: HTTP #"): 2,
            }
            ai = groups[(ai_step, "ai_unavailable")]
            assert ai.code == "ai_unavailable"
            assert len({g.key for g in groups.values()}) == len(groups)
            # Labelled with the latest failure, rendered in the reader's language.
            assert ai.label("en") == "Gave up after 4 attempts: AI request failed: HTTP 500"
            assert ai.label("ar") == "توقفت المحاولات بعد 4 محاولات: فشل طلب الذكاء الاصطناعي: HTTP 500"
            legacy = groups[(ai_step, "gave up after # attempts: AI request failed: HTTP #")]
            assert legacy.code is None
            assert legacy.label("ar") == "gave up after 5 attempts: AI request failed: HTTP 500"
            # A group selects exactly its own jobs (not the same code in another step, nor the
            # legacy rows of the same step).
            failed = JobFilter(status="failed")
            for group in groups.values():
                assert await count_matching(session, failed, stale_after=60, group=group) == group.count
            assert set(await job_ids_matching(session, failed, stale_after=60, group=ai)) == {ids[1], ids[2]}
            page = await list_jobs(session, failed, stale_after=60, group=legacy)
            assert {job.job_id for job in page.jobs} == {ids[6], ids[7]}

            # Cancelled jobs may be retried like failed ones, when asked for.
            everyone = list(ids.values())
            assert ids[8] not in await failed_among(session, everyone, failed_before=utcnow())
            retryable = await failed_among(session, everyone, failed_before=utcnow(), statuses=RETRYABLE_STATUSES)
            assert set(retryable) == set(everyone)
            assert (
                await failed_among(
                    session, [ids[8]], failed_before=utcnow() - timedelta(hours=1), statuses=RETRYABLE_STATUSES
                )
                == []
            )
            assert await count_matching(session, JobFilter(status="cancelled"), stale_after=60) == 1

            deliveries = await callback_deliveries(session, ids[2])
            assert [(d.state, d.attempts) for d in deliveries] == [("pending", 1), ("delivered", 2)]
            assert [d.state for d in await callback_deliveries(session, ids[3])] == ["gave_up"]
            assert await callback_deliveries(session, ids[1]) == []
    finally:
        await database.dispose()


def test_failure_groups_by_error_code_and_step(settings: Settings) -> None:
    asyncio.run(_groups_scenario(settings))


def test_the_jobs_list_index_is_declared_with_the_jobs_table() -> None:
    indexes = {index.name: [column.name for column in index.columns] for index in ExamProcessingJob.__table__.indexes}
    assert indexes["ix_exam_processing_jobs_created_at_id"] == ["created_at", "id"]
    assert not hasattr(jobs.admin_queries, "JOB_LIST_INDEX")
