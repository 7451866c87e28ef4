"""``JobService`` and ``ExamService`` on real SQLite and PostgreSQL databases.

The services run on advanced-alchemy's repository methods; these tests pin what callers rely
on: the rows each query picks and their order, the counts, and that nothing but ``submit``
commits (the caller's transaction decides).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import msgspec
import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import DBAPIError

from core.db import Database
from core.errors import IdempotencyConflictError
from core.settings import load_settings
from exams.catalog import load_catalog_file
from exams.definitions import ExamDefinition
from exams.models import Exam
from exams.services import ExamService
from jobs.models import ExamProcessingJob, utcnow
from jobs.services import PENDING_RESEND_AFTER, JobService, Submission
from support import MATH_ANSWERS, SAMPLE_CATALOG, sqlite_url

#: A fixed past instant the tests place rows around (no dependence on the wall clock).
T0 = utcnow().replace(microsecond=0) - timedelta(days=30)


async def add_job(db: Database, **fields: Any) -> UUID:
    """Insert one job with some columns set directly (as a worker would have left it)."""
    async with db.transaction() as session:
        job = ExamProcessingJob(exam_code="MATH-101", student_id="s-1", answers={"q1": "b"})
        for name, value in fields.items():
            setattr(job, name, value)
        session.add(job)
        await session.flush()
        return job.job_id


async def stored(db: Database, job_id: UUID) -> ExamProcessingJob:
    async with db.sessions() as session:
        job = await JobService(session=session).get_by_job_id(job_id)
    assert job is not None
    return job


def submission(key: str | None = None, student: str = "s-1", **answers: Any) -> Submission:
    return Submission(
        exam_code="MATH-101", student_id=student, answers=answers or dict(MATH_ANSWERS), idempotency_key=key
    )


def finished(status: str, at: datetime, **fields: Any) -> dict[str, Any]:
    step = "completed" if status == "completed" else "failed"
    return {"status": status, "current_step": step, "completed_at": at, **fields}


# --- look-ups and lists ------------------------------------------------------------------------


async def test_get_by_job_id(db: Database) -> None:
    job_id = await add_job(db, student_id="s-42")
    async with db.sessions() as session:
        service = JobService(session=session)
        job = await service.get_by_job_id(job_id)
        assert job is not None
        assert (job.job_id, job.student_id, job.status) == (job_id, "s-42", "pending")
        assert await service.get_by_job_id(UUID(int=7)) is None


async def test_list_recent_orders_newest_first_filters_and_limits(db: Database) -> None:
    oldest = await add_job(db, created_at=T0)
    failed = await add_job(db, created_at=T0 + timedelta(minutes=1), **finished("failed", T0))
    # Same creation time: the later insert (higher id) comes first.
    tie_first = await add_job(db, created_at=T0 + timedelta(minutes=2))
    tie_second = await add_job(db, created_at=T0 + timedelta(minutes=2))
    newest = await add_job(db, created_at=T0 + timedelta(minutes=3), status="processing", attempts=1)
    async with db.sessions() as session:
        service = JobService(session=session)
        everything = [job.job_id for job in await service.list_recent(limit=10)]
        assert everything == [newest, tie_second, tie_first, failed, oldest]
        assert [job.job_id for job in await service.list_recent()] == everything  # default limit 10
        assert [job.job_id for job in await service.list_recent(limit=2)] == [newest, tie_second]
        pending = [job.job_id for job in await service.list_recent("pending")]
        assert pending == [tie_second, tie_first, oldest]
        assert [job.job_id for job in await service.list_recent("pending", limit=1)] == [tie_second]
        assert [job.job_id for job in await service.list_recent("failed")] == [failed]
        assert await service.list_recent("completed") == []
        assert [job.job_id for job in await service.list_recent("", limit=10)] == everything  # "" = any


async def test_needing_dispatch_picks_each_kind_of_lost_job(db: Database) -> None:
    now = T0 + timedelta(days=1)
    stale_after, unsent_after = 20.0, 5.0
    long_ago = now - timedelta(seconds=PENDING_RESEND_AFTER + 60)
    recently = now - timedelta(seconds=2)
    # Pending, never handed to the broker: due once older than unsent_after.
    unsent = await add_job(db, created_at=now - timedelta(seconds=60), enqueued_at=None)
    await add_job(db, created_at=recently, enqueued_at=None)
    # Pending, handed to the broker long ago (the message was lost): due; recently sent: not.
    resend = await add_job(db, created_at=long_ago - timedelta(seconds=10), enqueued_at=long_ago)
    await add_job(db, created_at=now - timedelta(seconds=120), enqueued_at=now - timedelta(seconds=100))
    # Processing with a stale heartbeat (the worker died): due; a live heartbeat: not.
    processing: dict[str, Any] = {"status": "processing", "attempts": 1}
    stalled = await add_job(
        db, created_at=now - timedelta(seconds=90), heartbeat_at=now - timedelta(seconds=60), **processing
    )
    await add_job(db, created_at=now - timedelta(seconds=80), heartbeat_at=now - timedelta(seconds=10), **processing)
    # Released for a retry (no heartbeat): due only after a long silence.
    released_long_ago = await add_job(
        db, created_at=long_ago - timedelta(seconds=20), heartbeat_at=None, updated_at=long_ago, **processing
    )
    await add_job(db, created_at=now - timedelta(seconds=70), heartbeat_at=None, updated_at=recently, **processing)
    # Finished jobs never are.
    await add_job(db, created_at=long_ago, enqueued_at=None, **finished("completed", long_ago, progress=100))
    await add_job(db, created_at=long_ago, heartbeat_at=None, updated_at=long_ago, **finished("failed", long_ago))

    async with db.sessions() as session:
        service = JobService(session=session)
        found = await service.needing_dispatch(stale_after=stale_after, unsent_after=unsent_after, now=now)
        # Oldest first.
        assert [job.job_id for job in found] == [released_long_ago, resend, stalled, unsent]
        first_two = await service.needing_dispatch(stale_after=stale_after, unsent_after=unsent_after, limit=2, now=now)
        assert [job.job_id for job in first_two] == [released_long_ago, resend]
        # A little earlier, the unsent job was still in its grace time and the stalled one alive.
        before = await service.needing_dispatch(
            stale_after=stale_after, unsent_after=unsent_after, now=now - timedelta(seconds=58)
        )
        assert [job.job_id for job in before] == [released_long_ago, resend]


async def test_unfinished_is_pending_and_processing_oldest_first(db: Database) -> None:
    second = await add_job(db, created_at=T0 + timedelta(seconds=2), status="processing", attempts=1)
    first = await add_job(db, created_at=T0 + timedelta(seconds=1))
    third = await add_job(db, created_at=T0 + timedelta(seconds=3))
    await add_job(db, created_at=T0, **finished("completed", T0, progress=100))
    await add_job(db, created_at=T0, **finished("failed", T0))
    async with db.sessions() as session:
        service = JobService(session=session)
        assert [job.job_id for job in await service.unfinished()] == [first, second, third]
        assert [job.job_id for job in await service.unfinished(limit=2)] == [first, second]


async def test_failed_job_ids_oldest_first(db: Database) -> None:
    late = await add_job(db, created_at=T0 + timedelta(seconds=2), **finished("failed", T0))
    early = await add_job(db, created_at=T0 + timedelta(seconds=1), **finished("failed", T0))
    await add_job(db, created_at=T0, **finished("completed", T0, progress=100))
    await add_job(db, created_at=T0)
    async with db.sessions() as session:
        service = JobService(session=session)
        assert list(await service.failed_job_ids()) == [early, late]
        assert list(await service.failed_job_ids(limit=1)) == [early]


# --- clean-up ---------------------------------------------------------------------------------


async def test_count_and_delete_finished_jobs_in_batches(db: Database) -> None:
    cutoff = T0 + timedelta(days=7)
    old, recent = cutoff - timedelta(days=1), cutoff + timedelta(days=1)
    doomed = {await add_job(db, **finished("completed", old - timedelta(minutes=i), progress=100)) for i in range(3)}
    doomed |= {await add_job(db, **finished("failed", old)) for _ in range(2)}
    kept = {
        await add_job(db, **finished("completed", recent, progress=100)),
        await add_job(db, **finished("failed", recent)),
        await add_job(db),  # pending
        await add_job(db, status="processing", attempts=1, heartbeat_at=old, completed_at=old),  # not finished
    }
    async with db.sessions() as session:
        service = JobService(session=session)
        assert await service.count_finished_before(cutoff) == 5
        assert await service.count_finished_before(old - timedelta(days=1)) == 0
        # Left to the caller's transaction: rolled back, nothing is gone.
        assert await service.delete_finished_batch(cutoff, 2) == 2
        await session.rollback()
        assert await service.count_finished_before(cutoff) == 5

    deleted: list[int] = []
    while True:
        async with db.transaction() as session:
            count = await JobService(session=session).delete_finished_batch(cutoff, 2)
        if not count:
            break
        deleted.append(count)
    assert deleted == [2, 2, 1]
    async with db.sessions() as session:
        left = set((await session.execute(select(ExamProcessingJob.job_id))).scalars().all())
        assert await JobService(session=session).count_finished_before(cutoff) == 0
    assert left == kept
    assert not left & doomed


# --- submit and claim -------------------------------------------------------------------------


async def test_submit_commits_a_pending_job(db: Database) -> None:
    async with db.sessions() as session:
        job, created = await JobService(session=session).submit(submission(locale_note="x"))
    assert created
    assert job.enqueued_at is not None
    assert job.request_fingerprint
    again = await stored(db, job.job_id)  # visible to another session: committed
    assert (again.status, again.progress, again.current_step, again.attempts) == ("pending", 0, "queued", 0)
    assert again.answers == {"locale_note": "x"}
    assert again.created_at.tzinfo is not None


async def test_submit_replays_a_repeated_key_and_refuses_another_body(db: Database) -> None:
    async with db.sessions() as session:
        first, created = await JobService(session=session).submit(submission("key-1"))
    async with db.sessions() as session:
        again, created_again = await JobService(session=session).submit(submission("key-1"))
    assert created
    assert not created_again
    assert again.job_id == first.job_id
    for other in (submission("key-1", student="s-2"), submission("key-1", q1="a")):
        async with db.sessions() as session:
            with pytest.raises(IdempotencyConflictError):
                await JobService(session=session).submit(other)
    # Without a key, the same body makes a new job each time.
    async with db.sessions() as session:
        one, _ = await JobService(session=session).submit(submission())
        two, _ = await JobService(session=session).submit(submission())
    assert one.job_id != two.job_id
    async with db.sessions() as session:
        count = (await session.execute(select(func.count()).select_from(ExamProcessingJob))).scalar_one()
    assert count == 3


async def test_claim_takes_claimable_jobs_in_the_callers_transaction(db: Database) -> None:
    beat = T0
    pending = await add_job(db)
    live = await add_job(db, status="processing", attempts=1, heartbeat_at=beat, current_step="validating_exam")
    released = await add_job(db, status="processing", attempts=1, heartbeat_at=None)
    done = await add_job(db, **finished("completed", beat, progress=100))
    failed = await add_job(db, **finished("failed", beat))

    async with db.sessions() as session:
        service = JobService(session=session)
        job = await service.claim(pending, stale_after=60, now=beat)
        assert job is not None
        assert (job.status, job.attempts, job.heartbeat_at, job.started_at) == ("processing", 1, beat, beat)
        assert (await stored(db, pending)).status == "pending"  # not committed by the service
        await session.commit()
    claimed = await stored(db, pending)
    assert (claimed.status, claimed.attempts) == ("processing", 1)

    async with db.transaction() as session:
        service = JobService(session=session)
        assert await service.claim(live, stale_after=60, now=beat + timedelta(seconds=5)) is None
        assert await service.claim(done, stale_after=60) is None
        assert await service.claim(failed, stale_after=60) is None
        assert await service.claim(UUID(int=7), stale_after=60) is None
        assert await service.claim(released, stale_after=60, now=beat) is not None
        stale = await service.claim(live, stale_after=60, now=beat + timedelta(seconds=61))
        assert stale is not None
    taken = await stored(db, live)
    assert (taken.status, taken.attempts, taken.current_step) == ("processing", 2, "validating_exam")
    assert (await stored(db, released)).attempts == 2


async def test_dispatch_bookkeeping_updates(db: Database) -> None:
    pending = await add_job(db, enqueued_at=None)
    running = await add_job(db, status="processing", attempts=1, heartbeat_at=T0, enqueued_at=T0)
    async with db.transaction() as session:
        service = JobService(session=session)
        await service.mark_enqueued([pending, running], now=T0 + timedelta(seconds=1))
        await service.mark_enqueued([])
    assert (await stored(db, pending)).enqueued_at == T0 + timedelta(seconds=1)
    async with db.transaction() as session:
        await JobService(session=session).mark_unsent([pending, running])
        await JobService(session=session).mark_unsent([])
    assert (await stored(db, pending)).enqueued_at is None
    assert (await stored(db, running)).enqueued_at == T0 + timedelta(seconds=1)  # only pending jobs
    version = (await stored(db, running)).version
    async with db.transaction() as session:
        service = JobService(session=session)
        assert not await service.release_stalled(running, version - 1)  # changed since it was read
        assert await service.release_stalled(running, version, now=T0 + timedelta(seconds=9))
        assert not await service.release_stalled(pending, 1)
    freed = await stored(db, running)
    assert (freed.heartbeat_at, freed.version, freed.enqueued_at) == (None, version + 1, T0 + timedelta(seconds=9))


async def test_database_errors_are_not_wrapped(tmp_path: Path) -> None:
    """Callers (the 503 handler, the pipeline's retry) catch SQLAlchemy's own errors."""
    database = Database.from_settings(load_settings({"DATABASE_URL": sqlite_url(tmp_path)}, env_file=tmp_path / "x"))
    try:
        async with database.sessions() as session:
            with pytest.raises(DBAPIError):  # no such table: never migrated
                await JobService(session=session).get_by_job_id(UUID(int=1))
        async with database.sessions() as session:
            with pytest.raises(DBAPIError):
                await ExamService(session=session).list_exams()
    finally:
        await database.dispose()


# --- ExamService ------------------------------------------------------------------------------


def variant(definition: ExamDefinition, **changes: Any) -> ExamDefinition:
    return msgspec.structs.replace(definition, **changes)


async def test_exam_load_counts_new_and_replaced_and_keeps_row_identity(db: Database) -> None:
    catalog = load_catalog_file(SAMPLE_CATALOG)
    by_code = {exam.code: exam for exam in catalog}
    async with db.transaction() as session:
        assert await ExamService(session=session).load(catalog) == (len(catalog), 0)
    async with db.sessions() as session:
        before = {row.code: (row.id, row.created_at) for row in await ExamService(session=session).list_exams()}

    math = variant(
        by_code["MATH-101"],
        status="closed",
        title={"en": "Algebra, again"},
        questions=by_code["MATH-101"].questions[:2],
    )
    new = variant(by_code["GEO-110"], code="NEW-001")
    async with db.transaction() as session:
        assert await ExamService(session=session).load([math, new]) == (1, 1)
    async with db.sessions() as session:
        service = ExamService(session=session)
        rows = {row.code: row for row in await service.list_exams()}
        assert set(rows) == set(by_code) | {"NEW-001"}
        replaced = rows["MATH-101"]
        assert (replaced.id, replaced.created_at) == before["MATH-101"]  # replaced in place
        assert (replaced.status, replaced.title, replaced.question_count) == ("closed", {"en": "Algebra, again"}, 2)
        assert await service.get_definition("MATH-101") == math
        assert rows["NEW-001"].id not in {row_id for row_id, _ in before.values()}
        assert (rows["SCI-201"].id, rows["SCI-201"].created_at) == before["SCI-201"]  # untouched

    # A code repeated in one call: the last one wins, counted once new and then replaced.
    twice = [variant(new, code="NEW-002", pass_percentage=50.0), variant(new, code="NEW-002", pass_percentage=70.0)]
    async with db.transaction() as session:
        assert await ExamService(session=session).load(twice) == (1, 1)
        assert await ExamService(session=session).load([]) == (0, 0)
    async with db.sessions() as session:
        definition = await ExamService(session=session).get_definition("NEW-002")
    assert definition is not None
    assert definition.pass_percentage == 70.0


async def test_exam_load_is_left_to_the_callers_transaction(db: Database) -> None:
    catalog = load_catalog_file(SAMPLE_CATALOG)
    async with db.sessions() as session:
        assert await ExamService(session=session).load(catalog) == (len(catalog), 0)
        await session.rollback()
    async with db.sessions() as session:
        count = (await session.execute(select(func.count()).select_from(Exam))).scalar_one()
    assert count == 0


async def test_exam_get_definition_and_list(db: Database) -> None:
    catalog = load_catalog_file(SAMPLE_CATALOG)
    async with db.transaction() as session:
        await ExamService(session=session).load(list(reversed(catalog)))
    async with db.sessions() as session:
        service = ExamService(session=session)
        for exam in catalog:
            assert await service.get_definition(exam.code) == exam  # with the correct answers
        assert await service.get_definition("NOPE-1") is None
        rows = await service.list_exams()
        assert [row.code for row in rows] == sorted(exam.code for exam in catalog)
        assert {row.code: row.question_count for row in rows} == {exam.code: len(exam.questions) for exam in catalog}
