"""The results tables: written from a job, paged by keyset, exported, summed up, kept or erased.

On real SQLite and real PostgreSQL databases (PostgreSQL is required: ``pg_url`` fails, never skips).
"""

from __future__ import annotations

import asyncio
import csv
import io
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import pytest
from sqlalchemy import func, select

from core.db import Database
from jobs.models import CallbackDelivery, ExamProcessingJob, ExamResult, ExamResultTopic
from jobs.results import (
    CSV_HEADER,
    InvalidCursorError,
    ResultFilters,
    csv_lines,
    delete_results_before,
    erase_student,
    exam_summary,
    get_result,
    list_results,
    retention_cutoff,
    write_result,
)

BASE = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def make_result(percentage: float, *, topics: dict[str, float] | None = None) -> dict[str, Any]:
    topics = topics or {"algebra": percentage, "geometry": 100 - percentage}
    return {
        "score": percentage / 10,
        "max_score": 10,
        "percentage": percentage,
        "passed": percentage >= 60,
        "topics": [{"topic": t, "score": p / 10, "max_score": 10, "percentage": p} for t, p in topics.items()],
        "questions": [],
        "recommendations": [],
        "recommendations_source": "rule_based",
        "processed_at": "2026-01-01T12:00:00Z",
    }


async def add_results(db: Database, rows: list[tuple[str, str, float, datetime]]) -> list[str]:
    """Insert results (student, exam, percentage, graded_at) as a completion would; their job ids."""
    ids = []
    async with db.transaction() as session:
        for student, exam, percentage, graded_at in rows:
            job = ExamProcessingJob(job_id=uuid4(), exam_code=exam, student_id=student, answers={})
            await write_result(await session.connection(), job, make_result(percentage), graded_at)
            ids.append(str(job.job_id))
    return ids


async def test_write_result_copies_the_grade_and_its_topics(db: Database) -> None:
    [job_id] = await add_results(db, [("s-1", "MATH-101", 75.0, BASE)])
    async with db.reader.connect() as connection:
        doc = await get_result(connection, UUID(job_id))
    assert doc is not None
    assert (doc.job_id, doc.exam_code, doc.student_id, doc.graded_at) == (job_id, "MATH-101", "s-1", BASE)
    assert doc.result["percentage"] == 75.0
    async with db.transaction() as session:
        topics = (await session.execute(select(ExamResultTopic.topic, ExamResultTopic.percentage))).all()
    assert sorted(topics) == [("algebra", 75.0), ("geometry", 25.0)]


async def test_keyset_pages_are_newest_first_and_complete(db: Database) -> None:
    # Ten results, two of them at the same instant (the id breaks the tie).
    times = [BASE + timedelta(minutes=i) for i in range(9)] + [BASE + timedelta(minutes=4)]
    ids = await add_results(db, [("s-1", "MATH-101", 50.0 + i, t) for i, t in enumerate(times)])
    seen: list[str] = []
    cursor = None
    async with db.reader.connect() as connection:
        while True:
            page = await list_results(connection, ResultFilters(), limit=3, cursor=cursor)
            seen += [item.job_id for item in page.items]
            assert len(page.items) <= 3
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
    assert sorted(seen) == sorted(ids)
    assert len(seen) == len(set(seen)) == 10
    graded = dict(zip(ids, times, strict=True))
    order = [graded[j] for j in seen]
    assert order == sorted(order, reverse=True)


async def test_filters_by_student_exam_pass_and_time(db: Database) -> None:
    await add_results(
        db,
        [
            ("s-1", "MATH-101", 80.0, BASE),
            ("s-1", "BIO-201", 40.0, BASE + timedelta(hours=1)),
            ("s-2", "MATH-101", 30.0, BASE + timedelta(hours=2)),
            ("s-2", "MATH-101", 90.0, BASE + timedelta(hours=3)),
        ],
    )

    async def students(filters: ResultFilters) -> list[tuple[str, str, float]]:
        async with db.reader.connect() as connection:
            page = await list_results(connection, filters, limit=50)
        return [(i.student_id, i.exam_code, i.result["percentage"]) for i in page.items]

    assert await students(ResultFilters(student_id="s-1")) == [("s-1", "BIO-201", 40.0), ("s-1", "MATH-101", 80.0)]
    assert await students(ResultFilters(exam_code="MATH-101", passed=True)) == [
        ("s-2", "MATH-101", 90.0),
        ("s-1", "MATH-101", 80.0),
    ]
    assert await students(ResultFilters(passed=False, student_id="s-2")) == [("s-2", "MATH-101", 30.0)]
    window = ResultFilters(graded_after=BASE, graded_before=BASE + timedelta(hours=3))
    assert [p for _, _, p in await students(window)] == [30.0, 40.0]


async def test_a_cursor_only_works_for_its_own_filters(db: Database) -> None:
    await add_results(db, [("s-1", "MATH-101", 70.0, BASE + timedelta(minutes=i)) for i in range(3)])
    async with db.reader.connect() as connection:
        page = await list_results(connection, ResultFilters(student_id="s-1"), limit=1)
        assert page.next_cursor
        with pytest.raises(InvalidCursorError):
            await list_results(connection, ResultFilters(student_id="s-2"), limit=1, cursor=page.next_cursor)
        for garbage in ("x", "!!!", "eyJhIjoxfQ", page.next_cursor[:-3]):
            with pytest.raises(InvalidCursorError):
                await list_results(connection, ResultFilters(student_id="s-1"), limit=1, cursor=garbage)


async def test_csv_is_utf8_with_bom_in_batches_and_guards_formulas(db: Database) -> None:
    rows = [("طالب-1", "MATH-101", 75.0, BASE + timedelta(seconds=i)) for i in range(7)]
    rows.append(("=HYPERLINK(1)", "MATH-101", 100.0, BASE - timedelta(days=1)))
    await add_results(db, rows)
    chunks = [chunk async for chunk in csv_lines(db.reader, ResultFilters(exam_code="MATH-101"), batch=3)]
    body = b"".join(chunks)
    assert body.startswith(b"\xef\xbb\xbf")
    assert len(chunks) == 1 + 3  # the header, then three keyset batches of at most three rows
    table = list(csv.reader(io.StringIO(body.decode("utf-8-sig"), newline="")))
    assert tuple(table[0]) == CSV_HEADER
    assert len(table) == 9
    assert table[1][2] == "طالب-1"
    assert table[1][3:7] == ["7.5", "10", "75", "true"]
    assert table[1][7].endswith("Z")
    assert table[-1][2] == "'=HYPERLINK(1)"


async def test_summary_is_computed_by_the_database(db: Database) -> None:
    await add_results(
        db,
        [
            ("s-1", "MATH-101", 80.0, BASE),
            ("s-2", "MATH-101", 40.0, BASE),
            ("s-3", "MATH-101", 60.0, BASE),
            ("s-4", "BIO-201", 10.0, BASE),
        ],
    )
    async with db.reader.connect() as connection:
        summary = await exam_summary(connection, "MATH-101")
        empty = await exam_summary(connection, "NONE-1")
    assert summary.results == 3
    assert summary.mean_percentage == 60.0
    assert summary.pass_rate == pytest.approx(2 / 3, abs=1e-4)
    assert [(t.topic, t.mean_percentage) for t in summary.topics] == [("algebra", 60.0), ("geometry", 40.0)]
    assert (empty.results, empty.mean_percentage, empty.pass_rate, empty.topics) == (0, None, None, [])


async def test_retention_deletes_only_older_results_with_their_topics(db: Database) -> None:
    assert retention_cutoff(0) is None
    now = datetime.now(UTC)
    await add_results(db, [("s-1", "MATH-101", 50.0, now - timedelta(days=40)), ("s-1", "MATH-101", 60.0, now)])
    cutoff = retention_cutoff(30)
    assert cutoff is not None
    async with db.transaction() as session:
        assert await delete_results_before(session, cutoff, 1000) == 1
    async with db.transaction() as session:
        assert await session.scalar(select(func.count()).select_from(ExamResult)) == 1
        assert await session.scalar(select(func.count()).select_from(ExamResultTopic)) == 2


async def test_erasure_deletes_one_students_jobs_results_and_deliveries(db: Database) -> None:
    await add_results(db, [("s-1", "MATH-101", 50.0, BASE), ("s-1", "BIO-201", 60.0, BASE), ("s-2", "X", 1.0, BASE)])
    async with db.transaction() as session:
        for student in ("s-1", "s-1", "s-2"):
            job = ExamProcessingJob(exam_code="MATH-101", student_id=student, answers={"q1": "b"})
            session.add(job)
            await session.flush()
            session.add(
                CallbackDelivery(
                    job_id=job.job_id, student_id=student, url="https://h.example/", event="job.failed", payload="{}"
                )
            )
    async with db.transaction() as session:
        erased = await erase_student(session, "s-1")
    assert (erased.jobs, erased.results, erased.deliveries) == (2, 2, 2)
    async with db.transaction() as session:
        left = {
            "jobs": await session.scalar(select(func.count()).select_from(ExamProcessingJob)),
            "results": await session.scalar(select(func.count()).select_from(ExamResult)),
            "topics": await session.scalar(select(func.count()).select_from(ExamResultTopic)),
            "deliveries": await session.scalar(select(func.count()).select_from(CallbackDelivery)),
        }
    assert left == {"jobs": 1, "results": 1, "topics": 2, "deliveries": 1}


async def test_concurrent_pages_and_exports_do_not_interfere(db: Database) -> None:
    await add_results(db, [("s-1", "MATH-101", float(i), BASE + timedelta(seconds=i)) for i in range(20)])

    async def export() -> int:
        body = b"".join([c async for c in csv_lines(db.reader, ResultFilters(), batch=4)])
        return body.decode("utf-8-sig").count("\r\n")

    async def page() -> int:
        async with db.reader.connect() as connection:
            return len((await list_results(connection, ResultFilters(), limit=20)).items)

    assert await asyncio.gather(export(), page()) == [21, 20]
