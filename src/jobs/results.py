"""Results that outlast the job: written at completion, listed, exported, summed up, kept or erased.

A completed job's grade is copied into ``exam_results`` (and its per-topic percentages into
``exam_result_topics``) in the transaction that completes the job. The job cleanup never touches
these tables; ``RESULTS_RETENTION_DAYS`` (daily) and an erasure do.

Lists are keyset-paged newest first (``graded_at desc, id desc``), each filter served by an index
(see :class:`jobs.models.ExamResult`), so a deep page costs what the first one does. The cursor
is opaque to clients: the last row's sort key and a hash of the filters it belongs to.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast
from uuid import UUID

import msgspec
from sqlalchemy import Select, Table, and_, case, delete, func, insert, literal, select, tuple_
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from jobs.models import CallbackDelivery, ExamProcessingJob, ExamResult, ExamResultTopic, utcnow
from jobs.schemas import JobResult

__all__ = (
    "CSV_HEADER",
    "MAX_LIMIT",
    "Erasure",
    "ExamResultsSummary",
    "InvalidCursorError",
    "ResultDocument",
    "ResultFilters",
    "ResultPage",
    "TopicMean",
    "csv_lines",
    "delete_results_before",
    "erase_student",
    "exam_summary",
    "get_result",
    "list_results",
    "retention_cutoff",
    "write_result",
)

MAX_LIMIT = 500
CSV_HEADER = ("job_id", "exam_code", "student_id", "score", "max_score", "percentage", "passed", "graded_at")
#: Rows per query of a CSV export (each batch is one short keyset query).
CSV_BATCH = 1000
#: Result ids per ``DELETE … IN (…)`` of an erasure (well under SQLite's limit of bound values).
_ERASE_CHUNK = 1000
#: Cells starting with these are formulas to a spreadsheet: they are prefixed with ``'``.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


class ResultDocument(msgspec.Struct, kw_only=True):
    """One graded submission (``result`` has the shape of the status document's ``result``)."""

    job_id: str
    exam_code: str
    student_id: str
    graded_at: datetime
    result: JobResult


class ResultPage(msgspec.Struct, kw_only=True):
    """One page of results, newest first; ``next_cursor`` is null on the last page."""

    items: list[ResultDocument]
    next_cursor: str | None


class TopicMean(msgspec.Struct, kw_only=True):
    """The mean percentage of one topic over an exam's results."""

    topic: str
    mean_percentage: float


class ExamResultsSummary(msgspec.Struct, kw_only=True):
    """An exam's results at a glance: how many, mean percentage, pass rate (0-1), per-topic means."""

    exam_code: str
    results: int
    mean_percentage: float | None
    pass_rate: float | None
    topics: list[TopicMean]


class InvalidCursorError(ValueError):
    """Raised when a cursor was not made by this API for the same filters."""


@dataclass(frozen=True)
class ResultFilters:
    """The filters of a results list (every one optional)."""

    student_id: str | None = None
    exam_code: str | None = None
    passed: bool | None = None
    graded_after: datetime | None = None
    graded_before: datetime | None = None
    #: Only the results of this owner (a caller without ``read_all``); ``None``: everyone's.
    owner: str | None = None

    def fingerprint(self) -> str:
        """A short hash binding a cursor to the filters it was made for."""
        parts: tuple[object, ...] = (
            self.student_id,
            self.exam_code,
            self.passed,
            self.graded_after,
            self.graded_before,
        )
        if self.owner is not None:  # absent: the same cursors as before owners existed
            parts = (*parts, self.owner)
        return hashlib.sha256(repr(parts).encode()).hexdigest()[:12]

    def where(self) -> list[Any]:
        """The SQL conditions of these filters."""
        conditions: list[Any] = []
        if self.student_id is not None:
            conditions.append(ExamResult.student_id == self.student_id)
        if self.exam_code is not None:
            conditions.append(ExamResult.exam_code == self.exam_code)
        if self.passed is not None:
            conditions.append(ExamResult.passed.is_(self.passed))
        if self.graded_after is not None:
            conditions.append(ExamResult.graded_at > self.graded_after)
        if self.graded_before is not None:
            conditions.append(ExamResult.graded_at < self.graded_before)
        if self.owner is not None:
            conditions.append(ExamResult.owner == self.owner)
        return conditions


def _encode_cursor(graded_at: datetime, row_id: int, filters: ResultFilters) -> str:
    raw = msgspec.json.encode([graded_at.astimezone(UTC).isoformat(), row_id, filters.fingerprint()])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str, filters: ResultFilters) -> tuple[datetime, int]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        when, row_id, fingerprint = msgspec.json.decode(raw, type=tuple[str, int, str])
        graded_at = datetime.fromisoformat(when)
    except (binascii.Error, msgspec.DecodeError, msgspec.ValidationError, ValueError):
        raise InvalidCursorError(cursor) from None
    if fingerprint != filters.fingerprint() or graded_at.tzinfo is None:
        raise InvalidCursorError(cursor)
    return graded_at, row_id


def _page_query(columns: Sequence[Any], filters: ResultFilters, after: tuple[datetime, int] | None) -> Select[Any]:
    conditions = filters.where()
    if after is not None:
        key = tuple_(literal(after[0], ExamResult.graded_at.type), literal(after[1], ExamResult.id.type))
        conditions.append(tuple_(ExamResult.graded_at, ExamResult.id) < key)
    return select(*columns).where(and_(True, *conditions)).order_by(ExamResult.graded_at.desc(), ExamResult.id.desc())


def _as_utc(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


async def write_result(
    connection: AsyncConnection, job: ExamProcessingJob, result: dict[str, Any], graded_at: datetime
) -> None:
    """Insert the ``exam_results`` row (and its topics) of a job completing with ``result``, in the
    connection's transaction: two Core ``INSERT`` statements, cheaper than the ORM's unit of work
    on a worker's hot path (``bench/inflight.py``; docs/benchmarks.md)."""
    row_id = (
        await connection.execute(
            _INSERT_RESULT,
            {
                "job_id": job.job_id,
                "exam_code": job.exam_code,
                "student_id": job.student_id,
                "score": float(result["score"]),
                "max_score": float(result["max_score"]),
                "percentage": float(result["percentage"]),
                "passed": bool(result["passed"]),
                "graded_at": graded_at,
                "result": result,
                "owner": job.owner,
            },
        )
    ).scalar_one()
    topics = [
        {
            "result_id": row_id,
            "exam_code": job.exam_code,
            "topic": str(t["topic"]),
            "percentage": float(t["percentage"]),
        }
        for t in result.get("topics", [])
    ]
    if topics:
        await connection.execute(_INSERT_TOPIC, topics)


_RESULTS = cast("Table", ExamResult.__table__)
_INSERT_RESULT = insert(_RESULTS).returning(_RESULTS.c.id)
_INSERT_TOPIC = insert(cast("Table", ExamResultTopic.__table__))


_DOC_COLUMNS = (
    ExamResult.id,
    ExamResult.job_id,
    ExamResult.exam_code,
    ExamResult.student_id,
    ExamResult.graded_at,
    ExamResult.result,
)


def _document(row: Any) -> ResultDocument:
    return ResultDocument(
        job_id=str(row.job_id),
        exam_code=row.exam_code,
        student_id=row.student_id,
        graded_at=_as_utc(row.graded_at),
        result=row.result,
    )


async def get_result(connection: AsyncConnection, job_id: UUID, *, owner: str | None = None) -> ResultDocument | None:
    """The result of one job (one unique-index lookup), or ``None``; with ``owner``, only if it is theirs."""
    query = select(*_DOC_COLUMNS).where(ExamResult.job_id == job_id)
    if owner is not None:
        query = query.where(ExamResult.owner == owner)
    row = (await connection.execute(query)).first()
    return _document(row) if row is not None else None


async def list_results(
    connection: AsyncConnection, filters: ResultFilters, *, limit: int, cursor: str | None = None
) -> ResultPage:
    """One page of results matching ``filters``, newest first, after ``cursor``."""
    after = _decode_cursor(cursor, filters) if cursor else None
    rows = (await connection.execute(_page_query(_DOC_COLUMNS, filters, after).limit(limit + 1))).all()
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        last = rows[-1]
        next_cursor = _encode_cursor(_as_utc(last.graded_at), int(last.id), filters)
    return ResultPage(items=[_document(row) for row in rows], next_cursor=next_cursor)


def _csv_cell(value: object) -> str:
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, float):
        text = str(int(value)) if value.is_integer() else repr(value)
    elif isinstance(value, datetime):
        text = _as_utc(value).isoformat().replace("+00:00", "Z")
    else:
        text = str(value)
        if text.startswith(_FORMULA_STARTS):
            text = "'" + text
    if any(ch in text for ch in ',"\r\n'):
        text = '"' + text.replace('"', '""') + '"'
    return text


def _csv_line(values: Sequence[object]) -> str:
    return ",".join(_csv_cell(v) for v in values) + "\r\n"


_CSV_COLUMNS = (
    ExamResult.id,
    ExamResult.job_id,
    ExamResult.exam_code,
    ExamResult.student_id,
    ExamResult.score,
    ExamResult.max_score,
    ExamResult.percentage,
    ExamResult.passed,
    ExamResult.graded_at,
)


async def csv_lines(
    connections: Any, filters: ResultFilters, *, batch: int = CSV_BATCH, cursor: str | None = None
) -> AsyncIterator[bytes]:
    """The CSV export (UTF-8 with BOM, CRLF lines), one keyset batch at a time: constant memory.

    ``connections`` is an engine (``Database.reader``): each batch borrows a connection briefly,
    so a slow download never holds one, nor a transaction, between batches.
    """
    after = _decode_cursor(cursor, filters) if cursor else None
    yield ("\ufeff" + _csv_line(CSV_HEADER)).encode()
    while True:
        async with connections.connect() as connection:
            rows = (await connection.execute(_page_query(_CSV_COLUMNS, filters, after).limit(batch))).all()
        if not rows:
            return
        yield "".join(_csv_line([str(r.job_id), *tuple(r)[2:]]) for r in rows).encode()
        if len(rows) < batch:
            return
        after = (_as_utc(rows[-1].graded_at), int(rows[-1].id))


async def exam_summary(connection: AsyncConnection, exam_code: str) -> ExamResultsSummary:
    """Count, mean percentage, pass rate and per-topic means of one exam, aggregated by the database.

    Both aggregates read covering indexes only (``exam_code, percentage, passed`` and
    ``exam_code, topic, percentage``).
    """
    totals = (
        await connection.execute(
            select(
                func.count(),
                func.avg(ExamResult.percentage),
                func.avg(case((ExamResult.passed.is_(True), 1.0), else_=0.0)),
            ).where(ExamResult.exam_code == exam_code)
        )
    ).one()
    topics = (
        await connection.execute(
            select(ExamResultTopic.topic, func.avg(ExamResultTopic.percentage))
            .where(ExamResultTopic.exam_code == exam_code)
            .group_by(ExamResultTopic.topic)
            .order_by(ExamResultTopic.topic)
        )
    ).all()
    count = int(totals[0])
    return ExamResultsSummary(
        exam_code=exam_code,
        results=count,
        mean_percentage=round(float(totals[1]), 2) if count else None,
        pass_rate=round(float(totals[2]), 4) if count else None,
        topics=[TopicMean(topic=str(topic), mean_percentage=round(float(mean), 2)) for topic, mean in topics],
    )


async def _delete_results(session: AsyncSession, ids: Sequence[int]) -> int:
    if not ids:
        return 0
    # Topics first: the foreign key cascades too, but SQLite only with its pragma on.
    await session.execute(
        delete(ExamResultTopic).where(ExamResultTopic.result_id.in_(ids)),
        execution_options={"synchronize_session": False},
    )
    result = await session.execute(
        delete(ExamResult).where(ExamResult.id.in_(ids)), execution_options={"synchronize_session": False}
    )
    return int(getattr(result, "rowcount", 0) or 0)


async def delete_results_before(session: AsyncSession, cutoff: datetime, batch_size: int) -> int:
    """Delete at most ``batch_size`` results graded before ``cutoff``; return how many."""
    ids = (
        await session.execute(
            select(ExamResult.id).where(ExamResult.graded_at < cutoff).order_by(ExamResult.graded_at).limit(batch_size)
        )
    ).scalars()
    return await _delete_results(session, list(ids))


def retention_cutoff(days: int, now: datetime | None = None) -> datetime | None:
    """Results graded before this are past ``RESULTS_RETENTION_DAYS``; ``None`` when kept forever."""
    return None if days <= 0 else (now or utcnow()) - timedelta(days=days)


@dataclass(frozen=True)
class Erasure:
    """What erasing one student deleted."""

    jobs: int
    results: int
    deliveries: int


async def erase_student(session: AsyncSession, student_id: str) -> Erasure:
    """Delete every job, result and callback delivery of ``student_id`` (in the caller's transaction)."""
    ids = list((await session.execute(select(ExamResult.id).where(ExamResult.student_id == student_id))).scalars())
    results = 0
    for start in range(0, len(ids), _ERASE_CHUNK):
        results += await _delete_results(session, ids[start : start + _ERASE_CHUNK])
    deliveries = await session.execute(
        delete(CallbackDelivery).where(CallbackDelivery.student_id == student_id),
        execution_options={"synchronize_session": False},
    )
    jobs = await session.execute(
        delete(ExamProcessingJob).where(ExamProcessingJob.student_id == student_id),
        execution_options={"synchronize_session": False},
    )
    return Erasure(
        jobs=int(getattr(jobs, "rowcount", 0) or 0),
        results=results,
        deliveries=int(getattr(deliveries, "rowcount", 0) or 0),
    )
