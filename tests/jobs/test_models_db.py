"""The migration and ``JobService`` on real SQLite and real PostgreSQL databases."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any
from uuid import UUID

import pytest
from advanced_alchemy.base import orm_registry
from advanced_alchemy.types import GUID
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import event, inspect, select
from sqlalchemy.engine import Connection
from sqlalchemy.orm.exc import StaleDataError
from sqlalchemy.schema import CreateTable

import exams.models
import jobs.maintenance
from core.db import Database
from core.settings import Settings
from jobs.maintenance import cleanup_finished
from jobs.models import ExamProcessingJob, utcnow
from jobs.services import PENDING_RESEND_AFTER, JobService, Submission
from server.migrate import run_migrations
from support import MATH_ANSWERS

assert exams.models  # registers the exams table on the shared metadata

TABLE = "exam_processing_jobs"


def submission(key: str | None = None, student: str = "s-1", **answers: Any) -> Submission:
    return Submission(
        exam_code="MATH-101", student_id=student, answers=answers or dict(MATH_ANSWERS), idempotency_key=key
    )


async def add_job(db: Database, **fields: Any) -> UUID:
    """Insert one job with some columns set directly (as a worker would have left it)."""
    async with db.transaction() as session:
        job = ExamProcessingJob(exam_code="MATH-101", student_id="s-1", answers={"q1": "b"})
        for name, value in fields.items():
            setattr(job, name, value)
        session.add(job)
        await session.flush()
        return job.job_id


async def load_job(db: Database, job_id: UUID) -> ExamProcessingJob | None:
    async with db.transaction() as session:
        return await JobService(session=session).get_by_job_id(job_id)


# --- the migration --------------------------------------------------------------------------


def _schema(connection: Connection) -> dict[str, Any]:
    inspector = inspect(connection)
    return {
        "tables": set(inspector.get_table_names()),
        "indexes": inspector.get_indexes(TABLE),
        "uniques": inspector.get_unique_constraints(TABLE),
        "columns": {c["name"]: c for c in inspector.get_columns(TABLE)},
    }


async def test_migration_creates_the_tables_and_indexes(db: Database) -> None:
    async with db.engine.connect() as connection:
        schema = await connection.run_sync(_schema)
    assert {"exam_processing_jobs", "exams", "alembic_version"} <= schema["tables"]
    indexes = {tuple(ix["column_names"]): ix for ix in schema["indexes"]}
    assert ("job_id",) in indexes, indexes
    assert indexes[("job_id",)]["unique"], "job_id must be unique"
    assert ("status", "created_at") in indexes, indexes
    assert not indexes[("status", "created_at")]["unique"]
    uniques = {tuple(u["column_names"]) for u in schema["uniques"]} | {
        cols for cols, ix in indexes.items() if ix["unique"]
    }
    assert ("idempotency_key",) in uniques
    columns = schema["columns"]
    for name in ("job_id", "exam_code", "student_id", "status", "progress", "current_step", "answers", "attempts"):
        assert not columns[name]["nullable"], name
    for name in ("result", "error_message", "completed_at", "failed_step", "heartbeat_at"):
        assert columns[name]["nullable"], name


def _guid_on_sqlite(
    context: MigrationContext, inspected: Any, metadata: Any, inspected_type: Any, metadata_type: Any
) -> bool | None:
    # SQLite reports the BINARY(16) that GUID creates as NUMERIC(16) (type affinity), so the
    # default comparison sees a change that is not there; the DDL is checked separately below.
    if context.dialect.name == "sqlite" and isinstance(metadata_type, GUID):
        return False
    return None  # the default comparison


async def test_migration_matches_the_models(db: Database) -> None:
    def compare(connection: Connection) -> list[Any]:
        context = MigrationContext.configure(connection, opts={"compare_type": _guid_on_sqlite})
        return list(compare_metadata(context, orm_registry.metadata))

    async with db.engine.connect() as connection:
        differences = await connection.run_sync(compare)
        assert differences == []
        if db.engine.dialect.name == "sqlite":
            ddl = (
                await connection.exec_driver_sql(f"SELECT sql FROM sqlite_master WHERE name = '{TABLE}'")
            ).scalar_one()
            wanted = CreateTable(ExamProcessingJob.__table__).compile(dialect=db.engine.dialect)  # type: ignore[arg-type]
            assert "job_id BINARY(16) NOT NULL" in ddl
            assert "job_id BINARY(16) NOT NULL" in str(wanted)


def test_migrating_twice_is_a_no_op(settings: Settings) -> None:
    run_migrations(settings)  # already at head: nothing to do, no error


# --- JobService ------------------------------------------------------------------------------


async def test_concurrent_idempotent_submits_make_one_job(db: Database) -> None:
    async def submit() -> UUID:
        async with db.transaction() as session:
            job, _ = await JobService(session=session).submit(submission("key-race"))
            return job.job_id

    ids = await asyncio.gather(*(submit() for _ in range(4)))
    assert len(set(ids)) == 1


async def test_interleaved_claims_have_one_winner(db: Database) -> None:
    job_id = await add_job(db)
    async with db.transaction() as one, db.transaction() as two:
        first = await JobService(session=one).claim(job_id, stale_after=60)
        second = await JobService(session=two).claim(job_id, stale_after=60)
        assert first is not None
        assert second is not None  # both read "pending" before either wrote
        await one.commit()
        with pytest.raises(StaleDataError):
            await two.commit()
        await two.rollback()
    stored = await load_job(db, job_id)
    assert stored is not None
    assert (stored.status, stored.attempts) == ("processing", 1)


async def test_concurrent_claims_have_one_winner(db: Database) -> None:
    job_id = await add_job(db)

    async def claim() -> bool:
        try:
            async with db.transaction() as session:
                job = await JobService(session=session).claim(job_id, stale_after=60)
                return job is not None
        except StaleDataError:
            return False

    results = await asyncio.gather(claim(), claim(), claim())
    assert results.count(True) == 1, results
    stored = await load_job(db, job_id)
    assert stored is not None
    assert stored.attempts == 1


async def test_claim_leaves_a_live_job_alone_and_takes_a_stale_one(db: Database) -> None:
    beat = utcnow()
    job_id = await add_job(db, status="processing", attempts=1, heartbeat_at=beat, current_step="validating_exam")
    async with db.transaction() as session:
        assert await JobService(session=session).claim(job_id, stale_after=60, now=beat + timedelta(seconds=5)) is None
    async with db.transaction() as session:
        job = await JobService(session=session).claim(job_id, stale_after=60, now=beat + timedelta(seconds=61))
        assert job is not None
    stored = await load_job(db, job_id)
    assert stored is not None
    assert (stored.status, stored.attempts, stored.current_step) == ("processing", 2, "validating_exam")


async def test_claim_takes_a_released_job_and_refuses_finished_ones(db: Database) -> None:
    released = await add_job(db, status="processing", attempts=1, heartbeat_at=None)
    done = await add_job(db, status="completed", progress=100, current_step="completed", completed_at=utcnow())
    failed = await add_job(db, status="failed", current_step="failed", completed_at=utcnow())
    async with db.transaction() as session:
        service = JobService(session=session)
        assert await service.claim(released, stale_after=60) is not None
        assert await service.claim(done, stale_after=60) is None
        assert await service.claim(failed, stale_after=60) is None
        assert await service.claim(UUID(int=7), stale_after=60) is None


async def test_needing_dispatch_finds_unsent_and_stalled_jobs(db: Database) -> None:
    real_now = utcnow()
    later = real_now + timedelta(seconds=30)
    unsent = await add_job(db)
    stalled = await add_job(db, status="processing", attempts=1, heartbeat_at=real_now - timedelta(seconds=60))
    released = await add_job(db, status="processing", attempts=1, heartbeat_at=None)
    await add_job(db, enqueued_at=real_now)  # pending, handed to the broker
    await add_job(db, status="processing", attempts=1, heartbeat_at=later)  # alive
    await add_job(db, status="completed", progress=100, current_step="completed", completed_at=real_now)
    await add_job(db, status="failed", current_step="failed", completed_at=real_now)
    async with db.transaction() as session:
        service = JobService(session=session)
        found = await service.needing_dispatch(stale_after=20, unsent_after=5, now=later)
        # a job released for a retry waits for its (possibly queued) retry message
        assert {job.job_id for job in found} == {unsent, stalled}
        much_later = real_now + timedelta(seconds=PENDING_RESEND_AFTER + 1)
        found = await service.needing_dispatch(stale_after=20, unsent_after=5, now=much_later)
        assert released in {job.job_id for job in found}
        # right now, a just-submitted or just-released job is not yet due; the stalled one is
        due_now = await service.needing_dispatch(stale_after=20, unsent_after=5, now=real_now)
        assert {job.job_id for job in due_now} == {stalled}


async def test_cleanup_deletes_only_old_finished_jobs_in_batches(db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    old = utcnow() - timedelta(days=10)
    recent = utcnow() - timedelta(days=1)
    doomed = set()
    for _ in range(3):
        doomed.add(await add_job(db, status="completed", progress=100, current_step="completed", completed_at=old))
    for _ in range(2):
        doomed.add(await add_job(db, status="failed", current_step="failed", completed_at=old))
    kept = {
        await add_job(db, status="completed", progress=100, current_step="completed", completed_at=recent),
        await add_job(db, status="failed", current_step="failed", completed_at=recent),
        await add_job(db),  # pending
        await add_job(db, status="processing", attempts=1, heartbeat_at=utcnow()),
    }

    assert await cleanup_finished(db, 7, dry_run=True) == 5
    deletes: list[str] = []

    def count_deletes(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().upper().startswith("DELETE"):
            deletes.append(statement)

    monkeypatch.setattr(jobs.maintenance, "CLEANUP_BATCH", 2)
    event.listen(db.engine.sync_engine, "before_cursor_execute", count_deletes)
    try:
        assert await cleanup_finished(db, 7, dry_run=False) == 5
    finally:
        event.remove(db.engine.sync_engine, "before_cursor_execute", count_deletes)
    assert len(deletes) == 3  # 2 + 2 + 1
    async with db.transaction() as session:
        left = set((await session.execute(select(ExamProcessingJob.job_id))).scalars().all())
    assert left == kept
    assert await cleanup_finished(db, 7, dry_run=False) == 0


def test_the_job_model_maps_columns_only() -> None:
    # The pipeline writes a job's changed attributes as one Core UPDATE of its table's columns
    # (jobs.pipeline._write_job): a relationship on the model would need the ORM's flush again.
    mapper = inspect(ExamProcessingJob)
    assert not mapper.relationships
    assert {attribute.key for attribute in mapper.column_attrs} == set(ExamProcessingJob.__table__.c.keys())
