"""Many jobs in flight in one worker, on real SQLite and real PostgreSQL: their AI-wait progress is
written together (``_ProgressWrites``), every job's progress and heartbeat moving in a few
transactions rather than one per job per tick; a job cancelled or taken over meanwhile ends its
wait; and a pool with fewer connections than jobs delays them without failing any."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime
from uuid import UUID

import dramatiq
import pytest
from pipeline_support import load, submit
from sqlalchemy import update
from sqlalchemy.ext.asyncio import create_async_engine

import jobs.pipeline
from ai_client import AIClient
from core.db import Database
from core.settings import Settings, load_settings
from exams.catalog import load_catalog_file
from exams.services import ExamService
from jobs.actors import JobActor
from jobs.cancel import cancel_job
from jobs.models import ExamProcessingJob
from jobs.pipeline import JobCancelledError, PipelineRuntime, run_job
from server.migrate import run_migrations
from support import NO_ENV_FILE, SAMPLE_CATALOG, FakeAIProcess

JOBS = 8


@pytest.fixture
async def wide_runtime(settings: Settings, fake_ai_http: FakeAIProcess) -> AsyncIterator[PipelineRuntime]:
    """A runtime on each backend whose AI answers after 2.5 s (two or three ticks per job)."""
    fake_ai_http.set_mode("ok", latency=2.5)
    database = Database.from_settings(settings)
    async with database.transaction() as session:
        await ExamService(session=session).load(load_catalog_file(SAMPLE_CATALOG))
    ai = AIClient(base_url=fake_ai_http.base_url, api_key="k", model="m", timeout=30)
    yield PipelineRuntime(settings=settings, database=database, ai=ai)
    await ai.aclose()
    await database.dispose()


class Spy:
    """Counts the transactions of ``_ProgressWrites`` and the rows they carried."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.batches: list[int] = []
        original = jobs.pipeline._ProgressWrites._write

        async def write(writes: object, batch: list[object]) -> None:
            self.batches.append(len(batch))
            await original(writes, batch)  # type: ignore[arg-type]

        monkeypatch.setattr(jobs.pipeline._ProgressWrites, "_write", write)


async def _watch(runtime: PipelineRuntime, ids: list[UUID], seen: dict[UUID, set[int]]) -> None:
    while True:
        for job_id in ids:
            job = await load(runtime, job_id)
            if job.current_step == "getting_ai_recommendations":
                seen[job_id].add(job.progress)
        await asyncio.sleep(0.3)


async def test_many_jobs_in_the_ai_wait_share_their_progress_writes(
    wide_runtime: PipelineRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    spy = Spy(monkeypatch)
    ids = [await submit(wide_runtime) for _ in range(JOBS)]
    seen: dict[UUID, set[int]] = {job_id: set() for job_id in ids}
    watcher = asyncio.create_task(_watch(wide_runtime, ids, seen))
    try:
        await asyncio.gather(*(run_job(wide_runtime, job_id) for job_id in ids))
    finally:
        watcher.cancel()
    for job_id in ids:
        job = await load(wide_runtime, job_id)
        assert (job.status, job.progress) == ("completed", 100)
    assert sum(spy.batches) >= JOBS, "each job's progress was written during its AI wait"
    assert len(spy.batches) * 3 <= sum(spy.batches), f"jobs' ticks shared transactions: {spy.batches}"
    moved = [job_id for job_id, values in seen.items() if any(20 < v < 90 for v in values)]
    assert len(moved) >= JOBS // 2, f"progress inside the AI range was stored and read back: {seen}"


async def test_a_job_cancelled_in_the_ai_wait_stops_at_the_next_tick(wide_runtime: PipelineRuntime) -> None:
    ids = [await submit(wide_runtime) for _ in range(3)]
    running = [asyncio.create_task(run_job(wide_runtime, job_id)) for job_id in ids]
    while (await load(wide_runtime, ids[0])).current_step != "getting_ai_recommendations":
        await asyncio.sleep(0.05)
    await cancel_job(wide_runtime.database, ids[0])
    outcomes = await asyncio.gather(*running, return_exceptions=True)
    assert outcomes[1:] == [None, None]
    assert outcomes[0] is None or isinstance(outcomes[0], JobCancelledError)
    statuses = [(await load(wide_runtime, job_id)).status for job_id in ids]
    assert statuses == ["cancelled", "completed", "completed"]


async def test_a_job_taken_over_in_the_ai_wait_is_left_to_its_new_worker(wide_runtime: PipelineRuntime) -> None:
    ids = [await submit(wide_runtime) for _ in range(2)]
    running = [asyncio.create_task(run_job(wide_runtime, job_id)) for job_id in ids]
    while (await load(wide_runtime, ids[0])).progress <= 20:
        await asyncio.sleep(0.05)
    # Another worker claims it (as after a stale heartbeat): a new version, its own heartbeat.
    other: datetime = datetime.fromisoformat("2030-01-01T00:00:00+00:00")
    async with wide_runtime.database.transaction() as session:
        await session.execute(
            update(ExamProcessingJob)
            .where(ExamProcessingJob.job_id == ids[0])
            .values(version=ExamProcessingJob.version + 1, heartbeat_at=other)
        )
    await asyncio.gather(*running)
    taken, kept = await load(wide_runtime, ids[0]), await load(wide_runtime, ids[1])
    assert (taken.status, taken.heartbeat_at) == ("processing", other), "the first worker left it alone"
    assert kept.status == "completed"


@pytest.mark.postgres
@pytest.mark.timeout(60)  # (a run holding its connection while it waits starved the others for good)
async def test_an_exhausted_pool_delays_jobs_but_fails_none(pg_url: str, fake_ai_http: FakeAIProcess) -> None:
    """One pooled connection for 12 jobs, given up on after 5 ms: every job still completes in
    its first attempt (a pool time-out is waited out like a database outage, never a failure:
    inside the attempt by the pipeline, before the claim by the actor's redelivery)."""
    settings = load_settings(
        {"DATABASE_URL": pg_url, "JOB_MAX_RETRIES": "0", "AI_FALLBACK": "fail"}, env_file=NO_ENV_FILE
    )
    await asyncio.to_thread(run_migrations, settings)
    fake_ai_http.set_mode("ok", latency=0.5)
    database = Database(create_async_engine(pg_url, pool_size=1, max_overflow=0, pool_timeout=0.005))
    async with database.transaction() as session:
        await ExamService(session=session).load(load_catalog_file(SAMPLE_CATALOG))
    ai = AIClient(base_url=fake_ai_http.base_url, api_key="k", model="m", timeout=30)
    runtime = PipelineRuntime(settings=settings, database=database, ai=ai)
    try:
        ids = [await submit(runtime) for _ in range(12)]
        actor = JobActor(lambda: runtime)
        redeliveries: list[str] = []

        async def deliver(job_id: UUID) -> None:
            while True:  # as Dramatiq redelivers a message whose actor raised Retry
                try:
                    await actor.process_exam(str(job_id))
                except dramatiq.Retry as retry:
                    redeliveries.append(str(retry))
                    await asyncio.sleep(0.05)
                else:
                    return

        await asyncio.gather(*(deliver(job_id) for job_id in ids))
        jobs = [await load(runtime, job_id) for job_id in ids]
    finally:
        await ai.aclose()
        await database.dispose()
    assert [(job.status, job.attempts) for job in jobs] == [("completed", 1)] * 12
    assert redeliveries, "the pool was exhausted at least once (else this test proves nothing)"
    assert set(redeliveries) == {"database unavailable"}
