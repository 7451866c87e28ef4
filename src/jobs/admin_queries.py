"""The dashboard's reads and bulk changes on ``exam_processing_jobs``: filters, keyset pages,
failure groups, hourly counts and durations, a job's callback deliveries, and the retry, delete
and requeue of many jobs.

Every read is an index range: the list pages on ``(created_at, id)`` (newest first, keyset, so
page 1,000 costs what page 1 costs; the index ``ix_exam_processing_jobs_created_at_id`` is
declared with the table in :mod:`jobs.models`) and the hourly figures on ``completed_at``. Bulk changes
take an explicit, frozen set of jobs (ids, or a filter bounded by the moment it was previewed),
so what an operator confirmed is exactly what changes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import msgspec
from sqlalchemy import ColumnElement, and_, delete, func, literal, or_, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from jobs.errors import render_error
from jobs.models import CallbackDelivery, ExamProcessingJob, utcnow

__all__ = (
    "RETRYABLE_STATUSES",
    "STATUSES",
    "Cursor",
    "FailureGroup",
    "HourBucket",
    "JobFilter",
    "JobPage",
    "Timings",
    "callback_deliveries",
    "count_matching",
    "delete_jobs",
    "failed_among",
    "failure_groups",
    "finished_since",
    "hourly_counts",
    "job_ids_matching",
    "list_jobs",
    "lost_job_ids",
    "normalise_error",
    "recent_timings",
)

STATUSES = ("pending", "processing", "completed", "failed", "cancelled")
#: What an operator may retry (or delete from the dashboard): SPEC.md, "An operator may retry a
#: cancelled job like a failed one".
RETRYABLE_STATUSES = ("failed", "cancelled")
_J = ExamProcessingJob


def _aware(value: datetime | None) -> datetime | None:
    """SQLite hands back naive UTC datetimes."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


class JobFilter(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """What the jobs list and the bulk actions select. Empty fields select everything."""

    status: str | None = None
    exam_code: str | None = None
    student_id: str | None = None
    step: str | None = None
    #: Created at or after / before (UTC).
    since: datetime | None = None
    until: datetime | None = None
    #: Case-insensitive part of the error message.
    error: str | None = None
    #: Only processing jobs whose heartbeat is older than ``JOB_STALE_AFTER``.
    stalled: bool = False
    #: One failure group (see :func:`failure_groups`).
    group: str | None = None
    #: Failed at or before this moment: freezes a previewed set of failed jobs.
    failed_before: datetime | None = None

    def conditions(self, *, stale_after: float, now: datetime | None = None) -> list[ColumnElement[bool]]:
        """The WHERE clauses of this filter."""
        now = now or utcnow()
        where: list[ColumnElement[bool]] = []
        if self.status:
            where.append(_J.status == self.status)
        if self.exam_code:
            where.append(_J.exam_code == self.exam_code)
        if self.student_id:
            where.append(_J.student_id == self.student_id)
        if self.step:
            where.append(or_(_J.current_step == self.step, _J.failed_step == self.step))
        if self.since:
            where.append(_J.created_at >= self.since)
        if self.until:
            where.append(_J.created_at < self.until)
        if self.error:
            where.append(func.lower(_J.error_message).contains(self.error.lower(), autoescape=True))
        if self.stalled:
            where.append(and_(_J.status == "processing", _J.heartbeat_at < now - timedelta(seconds=stale_after)))
        if self.failed_before:
            where.append(and_(_J.status == "failed", _J.failed_at <= self.failed_before))
        return where

    def describe(self) -> dict[str, Any]:
        """The filter as JSON-ready values (the audit log's ``target``)."""
        return dict(msgspec.to_builtins(self))


class Cursor(msgspec.Struct, frozen=True, array_like=True):
    """Where a page ends: the last row's ``created_at`` and ``id``."""

    created_at: datetime
    id: int

    def encode(self) -> str:
        """An opaque URL-safe token."""
        return base64.urlsafe_b64encode(msgspec.json.encode(self)).decode().rstrip("=")

    @classmethod
    def decode(cls, token: str) -> Cursor | None:
        """The cursor of ``token``, or ``None`` when it is not one of ours."""
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
            return msgspec.json.decode(raw, type=cls)
        except (binascii.Error, ValueError, msgspec.DecodeError):
            return None


@dataclass
class JobPage:
    """One page of the jobs list and the cursor of the next one (``None`` on the last page)."""

    jobs: list[ExamProcessingJob]
    next_cursor: Cursor | None


async def list_jobs(
    session: AsyncSession,
    flt: JobFilter,
    *,
    stale_after: float,
    after: Cursor | None = None,
    limit: int = 50,
    group: FailureGroup | None = None,
) -> JobPage:
    """Newest first, ``limit`` jobs after ``after`` (keyset on ``(created_at, id)``)."""
    stmt = select(_J).where(*flt.conditions(stale_after=stale_after))
    if group is not None:
        stmt = stmt.where(group.condition())
    if after is not None:
        boundary = tuple_(literal(after.created_at, _J.created_at.type), literal(after.id))
        stmt = stmt.where(tuple_(_J.created_at, _J.id) < boundary)
    stmt = stmt.order_by(_J.created_at.desc(), _J.id.desc()).limit(limit + 1)
    rows = list((await session.execute(stmt)).scalars().all())
    more = len(rows) > limit
    rows = rows[:limit]
    last = rows[-1] if more and rows else None
    cursor = Cursor(_aware(last.created_at) or last.created_at, last.id) if last is not None else None
    return JobPage(rows, cursor)


async def count_matching(
    session: AsyncSession, flt: JobFilter, *, stale_after: float, group: FailureGroup | None = None
) -> int:
    """How many jobs the filter selects."""
    stmt = select(func.count()).select_from(_J).where(*flt.conditions(stale_after=stale_after))
    if group is not None:
        stmt = stmt.where(group.condition())
    return int((await session.execute(stmt)).scalar_one())


async def job_ids_matching(
    session: AsyncSession,
    flt: JobFilter,
    *,
    stale_after: float,
    group: FailureGroup | None = None,
    limit: int = 100_000,
) -> list[UUID]:
    """The ids of the jobs the filter selects, oldest first."""
    stmt = select(_J.job_id).where(*flt.conditions(stale_after=stale_after))
    if group is not None:
        stmt = stmt.where(group.condition())
    stmt = stmt.order_by(_J.created_at, _J.id).limit(limit)
    return list((await session.execute(stmt)).scalars().all())


async def failed_among(
    session: AsyncSession,
    job_ids: Sequence[UUID],
    *,
    failed_before: datetime,
    statuses: Sequence[str] = ("failed",),
) -> list[UUID]:
    """Those of ``job_ids`` that are in ``statuses`` (``failed``, and ``cancelled`` if listed) and
    ended at or before ``failed_before``."""
    ended: list[ColumnElement[bool]] = []
    if "failed" in statuses:
        ended.append(and_(_J.status == "failed", _J.failed_at <= failed_before))
    if "cancelled" in statuses:
        # A cancel sets ``completed_at`` (the end of the job), never ``failed_at``.
        ended.append(and_(_J.status == "cancelled", _J.completed_at <= failed_before))
    if not ended:
        return []
    found: set[UUID] = set()
    for start in range(0, len(job_ids), 500):
        chunk = list(job_ids[start : start + 500])
        stmt = select(_J.job_id).where(_J.job_id.in_(chunk), or_(*ended))
        found.update((await session.execute(stmt)).scalars().all())
    return [job_id for job_id in job_ids if job_id in found]


async def delete_jobs(session: AsyncSession, job_ids: Sequence[UUID], *, statuses: Sequence[str]) -> int:
    """Delete these jobs if they are (still) in one of ``statuses``; return how many went."""
    deleted = 0
    for start in range(0, len(job_ids), 500):
        chunk = list(job_ids[start : start + 500])
        stmt = delete(_J).where(_J.job_id.in_(chunk), _J.status.in_(list(statuses)))
        result = await session.execute(stmt, execution_options={"synchronize_session": False})
        deleted += int(getattr(result, "rowcount", 0) or 0)
    return deleted


# --- failure groups ----------------------------------------------------------------------------

_UUID = re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b", re.IGNORECASE)
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
#: Distinct (step, code, message) rows read to build the groups; more distinct messages than this
#: is itself the finding.
_MAX_DISTINCT = 2000


def normalise_error(message: str | None) -> str:
    """The cause of a failure without what varies between jobs (ids, counts, durations)."""
    text = _UUID.sub("<id>", message or "")
    return _NUMBER.sub("#", text).strip()[:300]


@dataclass
class FailureGroup:
    """Failed jobs with the same cause: the step that failed and the ``error_code`` (with the
    transient cause behind ``retries_exhausted``), or, for rows stored before error codes, the
    normalised English message."""

    key: str
    step: str
    #: The ``error_code`` of the group's jobs (``None``: rows without a code, grouped by message).
    code: str | None
    #: The machine cause: ``ai_unavailable``, ``retries_exhausted:temporary_error``, or the
    #: normalised message of rows without a code.
    cause: str
    #: The English message of the latest failure.
    example: str
    count: int
    first_seen: datetime
    last_seen: datetime
    #: The latest failure's ``error_params`` (renders :meth:`label` in any language).
    params: dict[str, Any] | None = None
    #: The exact stored messages of the group's rows (with ``step`` and ``code``, what selects them).
    messages: list[str] = field(default_factory=list)

    def label(self, locale: str) -> str:
        """The latest failure's error in ``locale`` (the English message of a row without a code)."""
        if self.code is not None and self.params is not None:
            return render_error(self.code, self.params, locale)
        return self.example

    def condition(self) -> ColumnElement[bool]:
        """The WHERE clause selecting this group's failed jobs."""
        step = _J.failed_step.is_(None) if self.step == "unknown" else _J.failed_step == self.step
        code = _J.error_code.is_(None) if self.code is None else _J.error_code == self.code
        return and_(_J.status == "failed", step, code, _J.error_message.in_(list(self.messages)))


def _group_key(step: str, cause: str) -> str:
    return hashlib.sha256(f"{step}\x00{cause}".encode()).hexdigest()[:16]


def _coded_cause(code: str, params: dict[str, Any] | None) -> str:
    """``code``, or ``code:cause`` when a transient cause ran out of retries under another code."""
    inner = (params or {}).get("cause")
    return f"{code}:{inner}" if inner and inner != code else code


async def _params_of(session: AsyncSession, ids: Sequence[int]) -> dict[int, dict[str, Any] | None]:
    found: dict[int, dict[str, Any] | None] = {}
    for start in range(0, len(ids), 500):
        stmt = select(_J.id, _J.error_params).where(_J.id.in_(list(ids[start : start + 500])))
        found.update({int(row_id): params for row_id, params in (await session.execute(stmt)).all()})
    return found


async def failure_groups(session: AsyncSession, *, since: datetime | None = None) -> list[FailureGroup]:
    """Failed jobs grouped by step and ``error_code`` (or normalised message), the largest first.

    One GROUP BY on the failed rows (step, code, message), then one read of the parameters of
    each distinct row's latest job (the ``cause`` inside ``retries_exhausted`` and the label).
    """
    stmt = (
        select(
            _J.failed_step,
            _J.error_code,
            _J.error_message,
            func.count(),
            func.min(_J.failed_at),
            func.max(_J.failed_at),
            func.max(_J.id),
        )
        .where(_J.status == "failed")
        .group_by(_J.failed_step, _J.error_code, _J.error_message)
        .order_by(func.count().desc())
        .limit(_MAX_DISTINCT)
    )
    if since is not None:
        stmt = stmt.where(_J.failed_at >= since)
    rows = (await session.execute(stmt)).all()
    params = await _params_of(session, [int(row[6]) for row in rows if row[1] is not None])
    groups: dict[str, FailureGroup] = {}
    for failed_step, code, message, count, first, last, latest_id in rows:
        step = str(failed_step or "unknown")
        row_params = params.get(int(latest_id)) if code is not None else None
        cause = _coded_cause(str(code), row_params) if code is not None else normalise_error(message)
        key = _group_key(step, f"code:{cause}" if code is not None else f"message:{cause}")
        first_at = _aware(first) or utcnow()
        last_at = _aware(last) or utcnow()
        group = groups.get(key)
        if group is None:
            group = groups[key] = FailureGroup(
                key, step, code, cause, message or "", int(count), first_at, last_at, row_params
            )
        else:
            group.count += int(count)
            group.first_seen = min(group.first_seen, first_at)
            if last_at > group.last_seen:
                group.last_seen = last_at
                group.example = message or ""
                group.params = row_params
        group.messages.append(message or "")
    return sorted(groups.values(), key=lambda g: (-g.count, -g.last_seen.timestamp()))


# --- callback deliveries -------------------------------------------------------------------------


async def callback_deliveries(session: AsyncSession, job_id: UUID, *, limit: int = 20) -> list[CallbackDelivery]:
    """The completion callbacks of one job, oldest first (a retried job may have several)."""
    stmt = (
        select(CallbackDelivery)
        .where(CallbackDelivery.job_id == job_id)
        .order_by(CallbackDelivery.created_at, CallbackDelivery.id)
        .limit(limit)
    )
    return list((await session.execute(stmt)).scalars().all())


# --- figures for the overview --------------------------------------------------------------------


@dataclass
class HourBucket:
    """Jobs submitted, completed and failed in one hour."""

    start: datetime
    submitted: int = 0
    completed: int = 0
    failed: int = 0


def _hour_expr(session: AsyncSession, column: Any) -> Any:
    if session.bind.dialect.name == "postgresql":
        return func.date_trunc("hour", column)
    return func.strftime("%Y-%m-%dT%H:00:00", column)


def _hour_value(value: Any) -> datetime:
    if isinstance(value, datetime):
        return _aware(value) or value
    return datetime.fromisoformat(str(value)).replace(tzinfo=UTC)


async def hourly_counts(session: AsyncSession, *, hours: int = 24, now: datetime | None = None) -> list[HourBucket]:
    """Per hour over the last ``hours`` hours, oldest first: submitted, completed, failed."""
    now = now or utcnow()
    current = now.replace(minute=0, second=0, microsecond=0)
    start = current - timedelta(hours=hours - 1)
    buckets = {start + timedelta(hours=i): HourBucket(start + timedelta(hours=i)) for i in range(hours)}
    hour = _hour_expr(session, _J.completed_at)
    finished = (
        select(hour, _J.status, func.count())
        .where(_J.completed_at >= start, _J.status.in_(("completed", "failed")))
        .group_by(hour, _J.status)
    )
    for at, status, count in (await session.execute(finished)).all():
        bucket = buckets.get(_hour_value(at))
        if bucket is not None:
            setattr(bucket, str(status), int(count))
    created = _hour_expr(session, _J.created_at)
    submitted = select(created, func.count()).where(_J.created_at >= start).group_by(created)
    for at, count in (await session.execute(submitted)).all():
        bucket = buckets.get(_hour_value(at))
        if bucket is not None:
            bucket.submitted = int(count)
    return [buckets[key] for key in sorted(buckets)]


async def finished_since(session: AsyncSession, since: datetime) -> dict[str, int]:
    """Jobs completed and failed since ``since`` (a range of the ``completed_at`` index)."""
    stmt = (
        select(_J.status, func.count())
        .where(_J.completed_at >= since, _J.status.in_(("completed", "failed")))
        .group_by(_J.status)
    )
    counts = {str(status): int(count) for status, count in (await session.execute(stmt)).all()}
    return {"completed": counts.get("completed", 0), "failed": counts.get("failed", 0)}


@dataclass
class Timings:
    """Percentiles (seconds) of the phases of recently completed jobs, from their timestamps."""

    sample: int
    #: ``phase -> (p50, p95)``; phases: ``waiting`` (submitted to first start), ``running``
    #: (first start to the end), ``total``.
    phases: dict[str, tuple[float, float]]


def _percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return 0.0
    rank = fraction * (len(ordered) - 1)
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


async def recent_timings(session: AsyncSession, *, since: datetime, limit: int = 2000) -> Timings:
    """p50/p95 of waiting, running and total time of the last ``limit`` jobs completed since ``since``."""
    stmt = (
        select(_J.created_at, _J.started_at, _J.completed_at)
        .where(_J.completed_at >= since, _J.status == "completed")
        .order_by(_J.completed_at.desc())
        .limit(limit)
    )
    waiting: list[float] = []
    running: list[float] = []
    total: list[float] = []
    for created, started, completed in (await session.execute(stmt)).all():
        created_at, started_at, completed_at = _aware(created), _aware(started), _aware(completed)
        if created_at is None or completed_at is None:
            continue
        total.append((completed_at - created_at).total_seconds())
        if started_at is not None:
            waiting.append((started_at - created_at).total_seconds())
            running.append((completed_at - started_at).total_seconds())
    phases = {
        name: (_percentile(values, 0.5), _percentile(values, 0.95))
        for name, values in (("waiting", waiting), ("running", running), ("total", total))
    }
    return Timings(len(total), phases)


async def lost_job_ids(
    session: AsyncSession,
    *,
    pending_older_than: float | None,
    stalled_after: float | None,
    now: datetime | None = None,
    limit: int = 100_000,
) -> tuple[list[UUID], list[UUID]]:
    """Jobs whose message may be lost: pending longer than ``pending_older_than`` seconds, and
    processing with a heartbeat older than ``stalled_after`` seconds (ids, oldest first)."""
    now = now or utcnow()
    pending: list[UUID] = []
    stalled: list[UUID] = []
    if pending_older_than is not None:
        stmt = (
            select(_J.job_id)
            .where(_J.status == "pending", _J.created_at < now - timedelta(seconds=pending_older_than))
            .order_by(_J.created_at)
            .limit(limit)
        )
        pending = list((await session.execute(stmt)).scalars().all())
    if stalled_after is not None:
        stmt = (
            select(_J.job_id)
            .where(_J.status == "processing", _J.heartbeat_at < now - timedelta(seconds=stalled_after))
            .order_by(_J.created_at)
            .limit(limit)
        )
        stalled = list((await session.execute(stmt)).scalars().all())
    return pending, stalled
