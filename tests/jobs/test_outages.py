"""Outages met by a running job, in process (``run_job`` and the actor on a real SQLite database,
the real fake-AI process): the database away at a step boundary or while the AI answers, the AI
guard's store away, a garbage AI answer, a worker stopping, a broker that lost its messages.

An outage is not the job's failure: the attempt waits and carries on, an AI answer received is
never asked for again, and nothing is recorded as failed. (The fault drills in ``tests/drills``
do the same to real processes and real servers.)
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import asyncpg  # type: ignore[import-untyped]
import dramatiq
import pytest
import redis.exceptions
from pipeline_support import load, submit
from production_support import RedisServer
from sqlalchemy import update
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession

import jobs.pipeline
from core.db import Database
from core.settings import Settings
from jobs.actors import DATABASE_RETRY_CAP_SECONDS, JobActor, declare_actors
from jobs.ai_guard import GuardLimits, LocalAIGuard
from jobs.broker import broker_lost_messages, create_broker
from jobs.dispatch import reconcile
from jobs.models import ExamProcessingJob, utcnow
from jobs.pipeline import HandedBack, PipelineRuntime, RetryLater, run_job
from jobs.services import JobService
from outage_errors import StartingPostgres, raised_async, through_sqlalchemy_adapter
from support import FakeAIProcess

#: ``JOB_MAX_RETRIES`` of the ``db_settings`` fixture (conftest.py).
PIPELINE_MAX_RETRIES = "1"


class Outage:
    """Every commit fails with ``error()`` for ``seconds`` once armed (the database is away)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, error: Callable[[], BaseException], seconds: float) -> None:
        self.error = error
        self.seconds = seconds
        self.until = 0.0
        self.failed = 0
        commit = AsyncSession.commit

        async def failing_commit(session: AsyncSession) -> None:
            if time.monotonic() < self.until:
                self.failed += 1
                raise self.error()
            await commit(session)

        monkeypatch.setattr(AsyncSession, "commit", failing_commit)

    def arm(self) -> None:
        if not self.until:
            self.until = time.monotonic() + self.seconds


def _sqlite_full() -> BaseException:
    import sqlite3

    full = sqlite3.OperationalError("database or disk is full")
    full.sqlite_errorcode = 13  # type: ignore[attr-defined]  # SQLITE_FULL, as sqlite3 sets it
    full.sqlite_errorname = "SQLITE_FULL"  # type: ignore[attr-defined]
    return OperationalError("UPDATE exam_processing_jobs …", {}, full)


#: One per class of error the drills met while the database was away.
DATABASE_AWAY: dict[str, Callable[[], BaseException]] = {
    "postgresql shutting down (asyncpg, unwrapped)": lambda: asyncpg.exceptions.CannotConnectNowError(
        "the database system is shutting down"
    ),
    "session ended by a fast shutdown (SQLAlchemy)": lambda: through_sqlalchemy_adapter(
        asyncpg.exceptions.AdminShutdownError("terminating connection due to administrator command")
    ),
    "connection refused": lambda: ConnectionRefusedError(111, "Connect call failed"),
    "sqlite disk full": _sqlite_full,
}


@pytest.mark.parametrize("error", DATABASE_AWAY.values(), ids=DATABASE_AWAY.keys())
async def test_the_database_away_at_a_step_is_waited_out_in_the_same_attempt(
    runtime: PipelineRuntime,
    fake_ai_http: FakeAIProcess,
    monkeypatch: pytest.MonkeyPatch,
    error: Callable[[], BaseException],
) -> None:
    outage = Outage(monkeypatch, error, seconds=1.0)
    finalize = jobs.pipeline._STEPS["finalizing_results"]

    async def finalize_in_an_outage(run: Any) -> None:
        outage.arm()  # the database goes as the job completes
        await finalize(run)

    monkeypatch.setitem(jobs.pipeline._STEPS, "finalizing_results", finalize_in_an_outage)
    job_id = await submit(runtime)
    await run_job(runtime, job_id)  # no RetryLater, no failure: the attempt waited

    job = await load(runtime, job_id)
    assert (job.status, job.attempts, job.error_message) == ("completed", 1, None)
    assert outage.failed >= 1
    assert fake_ai_http.requests() == 1


async def test_a_statement_the_database_refuses_is_a_bug_not_an_outage(
    runtime: PipelineRuntime, fake_ai_http: FakeAIProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An ``IntegrityError`` (a refused statement) is no outage: not waited out, not retried as
    ``database_unavailable``, but the job failed at once with ``internal_error``."""

    async def finalize_refused(run: Any) -> None:
        raise IntegrityError("INSERT INTO exam_results …", {}, sqlite3.IntegrityError("UNIQUE constraint failed"))

    monkeypatch.setitem(jobs.pipeline._STEPS, "finalizing_results", finalize_refused)
    job_id = await submit(runtime)
    await run_job(runtime, job_id)  # no RetryLater

    job = await load(runtime, job_id)
    assert (job.status, job.attempts, job.error_code) == ("failed", 1, "internal_error")
    assert job.error_message is not None
    assert "IntegrityError" in job.error_message


async def test_the_database_away_while_the_ai_answers_keeps_the_answer(
    runtime: PipelineRuntime, fake_ai_http: FakeAIProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    outage = Outage(monkeypatch, DATABASE_AWAY["postgresql shutting down (asyncpg, unwrapped)"], seconds=2.5)
    assert runtime.ai is not None
    recommend = runtime.ai.recommend

    async def recommend_in_an_outage(request: Any) -> Any:
        outage.arm()  # progress writes fail while the AI works, and so does storing its answer
        return await recommend(request)

    monkeypatch.setattr(runtime.ai, "recommend", recommend_in_an_outage)
    fake_ai_http.set_mode("ok", latency=1.5)
    job_id = await submit(runtime)
    await run_job(runtime, job_id)

    job = await load(runtime, job_id)
    assert (job.status, job.attempts) == ("completed", 1)
    assert job.result is not None
    assert job.result["recommendations_source"] == "ai"
    assert outage.failed >= 2  # a progress tick and the answer's first save, at least
    assert fake_ai_http.requests() == 1  # the answer was kept through the outage


async def test_the_actor_retries_soon_while_postgresql_starts_up(db_settings: Settings) -> None:
    with StartingPostgres() as starting:
        settings = db_settings.with_overrides(database_url=starting.url)
        database = Database.from_settings(settings)
        actor = JobActor(lambda: PipelineRuntime(settings=settings, database=database, ai=None))
        try:
            error = await raised_async(lambda: actor.process_exam(str(UUID(int=7))))
        finally:
            await database.dispose()

    assert isinstance(error, dramatiq.Retry), repr(error)  # not the raw CannotConnectNowError
    assert error.delay is not None
    assert error.delay <= DATABASE_RETRY_CAP_SECONDS * 1.5 * 1000


class GuardStoreAway(LocalAIGuard):
    """The AI guard whose store (Redis) refuses the first ``times`` asks."""

    def __init__(self, settings: Settings, times: int) -> None:
        super().__init__(GuardLimits.from_settings(settings))
        self.times = times
        self.refused = redis.exceptions.ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    async def try_start(self, token: str) -> Any:
        if self.times > 0:
            self.times -= 1
            raise self.refused
        return await super().try_start(token)


async def test_the_ai_guard_store_away_is_waited_for_like_a_slot(
    runtime: PipelineRuntime, fake_ai_http: FakeAIProcess
) -> None:
    runtime.guard = GuardStoreAway(runtime.settings, times=2)
    job_id = await submit(runtime)
    await run_job(runtime, job_id)

    job = await load(runtime, job_id)
    assert (job.status, job.attempts) == ("completed", 1)
    assert fake_ai_http.requests() == 1


async def test_a_garbage_ai_answer_is_asked_again(runtime: PipelineRuntime, fake_ai_http: FakeAIProcess) -> None:
    fake_ai_http.set_mode("invalid_json", times=1)
    job_id = await submit(runtime)
    with pytest.raises(RetryLater):
        await run_job(runtime, job_id)
    waiting = await load(runtime, job_id)
    assert (waiting.status, waiting.current_step, waiting.error_code) == (
        "processing",
        "getting_ai_recommendations",
        "ai_invalid_answer",
    )

    await run_job(runtime, job_id)
    job = await load(runtime, job_id)
    assert (job.status, job.attempts) == ("completed", 2)
    assert job.result is not None
    assert job.result["recommendations_source"] == "ai"
    assert fake_ai_http.requests() == 2


async def test_garbage_until_the_retries_are_used_up_is_handled_per_ai_fallback(
    runtime: PipelineRuntime, fake_ai_http: FakeAIProcess
) -> None:
    fake_ai_http.set_mode("bad_shape")
    fallback = PipelineRuntime(
        settings=runtime.settings.with_overrides(ai_fallback="rule_based"), database=runtime.database, ai=runtime.ai
    )
    job_id = await submit(fallback)
    with pytest.raises(RetryLater):
        await run_job(fallback, job_id)
    await run_job(fallback, job_id)  # the last attempt (1 + JOB_MAX_RETRIES) meets garbage again

    job = await load(runtime, job_id)
    assert (job.status, job.attempts) == ("completed", 2)
    assert job.result is not None
    assert job.result["recommendations_source"] == "rule_based_fallback"
    assert job.result["recommendations_note"]

    failing = await submit(runtime)  # AI_FALLBACK=fail
    with pytest.raises(RetryLater):
        await run_job(runtime, failing)
    await run_job(runtime, failing)
    failed = await load(runtime, failing)
    assert (failed.status, failed.error_code, failed.attempts) == ("failed", "ai_invalid_answer", 2)
    assert "2 attempts" in (failed.error_message or "")


async def test_a_stopping_worker_hands_a_job_back_before_calling_the_ai(
    runtime: PipelineRuntime, fake_ai_http: FakeAIProcess
) -> None:
    runtime.stopping = lambda: True
    job_id = await submit(runtime)
    with pytest.raises(HandedBack):
        await run_job(runtime, job_id)

    handed = await load(runtime, job_id)
    assert (handed.status, handed.current_step, handed.attempts, handed.heartbeat_at) == (
        "processing",
        "getting_ai_recommendations",
        0,  # not an attempt
        None,  # claimable at once
    )
    assert handed.grading is not None
    assert fake_ai_http.requests() == 0

    runtime.stopping = lambda: False
    await run_job(runtime, job_id)  # the next worker
    job = await load(runtime, job_id)
    assert (job.status, job.attempts) == ("completed", 1)
    assert fake_ai_http.requests() == 1


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()


async def test_a_broker_that_lost_its_messages_gets_every_waiting_job_again(
    runtime: PipelineRuntime, private_redis: RedisServer
) -> None:
    settings = runtime.settings.with_overrides(queue_connection="redis", redis_url=private_redis.url)
    broker = create_broker(settings)
    declare_actors(broker, settings)
    sent = await submit(runtime)
    async with runtime.database.transaction() as session:
        await JobService(session=session).mark_enqueued([sent], now=utcnow() - timedelta(seconds=30))
    try:
        assert broker_lost_messages(broker)  # the first look finds no marker
        assert not broker_lost_messages(broker)
        assert await reconcile(broker, runtime.database, settings) == 0  # its message is in Redis

        private_redis.client().flushall()  # a Redis restarted without persistence
        assert await reconcile(broker, runtime.database, settings) == 1
    finally:
        broker.close()
    messages = private_redis.client().hvals("dramatiq:exams.msgs")
    assert [m for m in messages if str(sent).encode() in m]


async def test_right_after_an_outage_the_reconciler_leaves_stale_heartbeats_alone(
    runtime: PipelineRuntime, private_redis: RedisServer
) -> None:
    settings = runtime.settings.with_overrides(queue_connection="redis", redis_url=private_redis.url)
    broker = create_broker(settings)
    declare_actors(broker, settings)
    job_id = await submit(runtime)
    async with runtime.database.transaction() as session:
        job = await JobService(session=session).claim(job_id, stale_after=10)
        assert job is not None
    async with runtime.database.transaction() as session:
        stale = utcnow() - timedelta(seconds=settings.job_stale_after + 5)
        await session.execute(update(ExamProcessingJob).values(heartbeat_at=stale, enqueued_at=utcnow()))
    try:
        # Its worker may be reconnecting this very moment: not taken from it yet.
        assert await reconcile(broker, runtime.database, settings, stalled=False) == 0
        assert (await load(runtime, job_id)).heartbeat_at is not None
        assert await reconcile(broker, runtime.database, settings) == 1
    finally:
        broker.close()
    assert (await load(runtime, job_id)).heartbeat_at is None
