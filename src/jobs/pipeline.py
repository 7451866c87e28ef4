"""The four pipeline steps of one exam job, with progress, heartbeats, resumption and retries.

``run_job`` is what the actor calls. It claims the job (one worker at a time), runs the steps
not yet done (the grading and any AI answer already received are kept on the row, so a retry
never redoes them), and ends in one of four ways: completed (its result also written to
``exam_results`` in the same transaction); released for a retry (a transient error, ``attempts``
not yet exhausted), which raises :class:`RetryLater`; failed; or stopped because the job was
cancelled meanwhile (seen at the next write: a step boundary, or the AI wait's tick every
second, which also abandons the AI request).

A terminal state with a ``callback_url`` commits its callback delivery with it (the outbox);
the runtime's ``send_callback`` then hands it to the broker.

Outages are not failures. When the database cannot be reached (restarting, down, its disk full:
``core.retry.is_connection_problem``) the attempt waits for it with back-off, reloads the row and
carries on at the step the row says, within the same attempt; a paid AI answer waits in memory
until it is stored. When the AI guard's store (Redis) is away, the job waits for it like for a
slot. When the worker is stopping (``runtime.stopping``), a job that has not started its AI
request hands itself back at once (:class:`HandedBack`: released, the attempt not counted) and
one whose request is under way finishes with its answer.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any, cast
from uuid import UUID

import msgspec
import structlog
from sqlalchemy import Table, Update, bindparam, inspect, select, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.orm.exc import StaleDataError

from ai_client import (
    AIClient,
    AIInvalidAnswerError,
    AIPermanentError,
    AITransientError,
    GradeSummary,
    RecommendationRequest,
    rule_based_recommendations,
)
from core import metrics
from core.db import Database
from core.retry import DATABASE_ERRORS, backoff_seconds, is_connection_problem, is_transient
from core.settings import Settings
from exams.definitions import ExamDefinition
from exams.grading import grade, validate_answers
from exams.services import ExamService
from i18n import gettext, localized
from jobs.ai_guard import (
    Admission,
    AICircuitOpenError,
    AIGuard,
    AIGuardUnavailableError,
    AISlotWaitExpiredError,
    Outcome,
    acquire,
    new_token,
    release,
)
from jobs.callbacks import new_delivery
from jobs.errors import JobError
from jobs.live import WATCHED_COLUMNS, publish_written
from jobs.models import CallbackDelivery, ExamProcessingJob, utcnow
from jobs.progress import PIPELINE_STEPS, STEP_RANGES, Step, ai_wait_progress, step_index
from jobs.results import write_result
from jobs.services import JobService

__all__ = (
    "HandedBack",
    "JobCancelledError",
    "PermanentJobError",
    "PipelineRuntime",
    "RetryLater",
    "TransientJobError",
    "run_job",
)

log = structlog.get_logger("jobs.pipeline")

#: A change to a job's row, applied just before a commit (see :meth:`_JobRun.save`).
Change = Callable[[ExamProcessingJob], None]
#: Rows written in the same transaction as a change, on its connection (see :func:`_write_job`).
AlsoWrite = Callable[[AsyncConnection], Awaitable[None]]

#: Heartbeat and progress updates during the AI wait (SPEC: at least every 2 s).
TICK_SECONDS = 1.0
#: How long the AI-wait progress of one job waits for others' to be written in the same
#: transaction (:class:`_ProgressWrites`): a worker with 500 jobs in flight writes them a few at a
#: time, not 500 transactions a second.
GATHER_SECONDS = 0.2
#: Seconds of an attempt kept back from the wait for an AI slot: the call itself plus this.
_CALL_MARGIN_SECONDS = 5.0
#: Longest pause between two looks at a database (or AI guard store) that is away.
_OUTAGE_POLL_CAP_SECONDS = 2.0
#: Message key of ``result.recommendations_note`` when the rule-based fallback stood in for the AI.
FALLBACK_NOTE_KEY = "job.note.ai_fallback"


class TransientJobError(Exception):
    """Raised when a step failed for a reason that may pass (timeout, AI overloaded, …)."""

    def __init__(self, error: JobError, retry_after: float | None = None) -> None:
        super().__init__(error.english)
        self.error = error
        self.retry_after = retry_after


class PermanentJobError(Exception):
    """Raised when a step failed for a reason a retry cannot fix (exam gone, invalid AI answer)."""

    def __init__(self, error: JobError) -> None:
        super().__init__(error.english)
        self.error = error


class JobCancelledError(Exception):
    """Raised when the job was cancelled while this attempt ran: stop, write nothing more."""


class HandedBack(Exception):
    """Raised by :func:`run_job` when the worker is stopping and the job was handed back before
    its AI request started: released (when the database could be written), the attempt not
    counted; the caller sends it to the broker again at once."""


class _StopRequested(Exception):
    """Raised inside an attempt when the worker is stopping and the job should be handed back."""


#: Failures that end an attempt but not the job: it is retried while attempts remain.
_RETRYABLE: tuple[type[BaseException], ...] = (TransientJobError, TimeoutError)


class RetryLater(Exception):
    """Raised when the job was released and must run again after ``delay`` seconds."""

    def __init__(self, delay: float) -> None:
        super().__init__(f"retry in {delay:.1f} s")
        self.delay = delay


@dataclass
class PipelineRuntime:
    """What a worker process needs to run jobs: settings, database, AI client."""

    settings: Settings
    database: Database
    ai: AIClient | None
    #: Hands a committed callback delivery to the broker (set by the actor; blocking).
    send_callback: Callable[[UUID], None] | None = None
    #: Shared AI limits, 429 pauses and circuit breaker (``None``: every call goes straight out).
    guard: AIGuard | None = None
    #: Whether the worker is shutting down (set by the actor): jobs not yet calling the AI are
    #: handed back rather than started.
    stopping: Callable[[], bool] = field(default=lambda: False)
    _expected_ai_seconds: float = field(default=0.0)
    _progress: _ProgressWrites | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if not self._expected_ai_seconds:
            guess = self.settings.fake_ai_latency if not self.settings.ai_api_base_url else 35.0
            self._expected_ai_seconds = min(max(guess, 1.0), self.settings.ai_api_timeout)

    def observe_ai_seconds(self, seconds: float) -> None:
        """Track a moving average of AI latency, used to pace the progress bar."""
        self._expected_ai_seconds = 0.8 * self._expected_ai_seconds + 0.2 * seconds

    @property
    def expected_ai_seconds(self) -> float:
        """Expected duration of one AI call (seconds)."""
        return self._expected_ai_seconds

    @property
    def progress_writes(self) -> _ProgressWrites:
        """Writes the AI-wait progress of this runtime's jobs together (built on first use, on
        the runtime's event loop)."""
        if self._progress is None:
            self._progress = _ProgressWrites(self.database)
        return self._progress

    def retry_delay(self, attempts: int, retry_after: float | None) -> float:
        """Back-off before the next attempt: exponential with jitter, at least ``Retry-After``."""
        return backoff_seconds(attempts, base=self.settings.job_retry_backoff, cap=300.0, at_least=retry_after)


class _JobRun:
    """One attempt at one job: the session, the row, and a lock serialising writes to it."""

    def __init__(self, runtime: PipelineRuntime, session: AsyncSession, job: ExamProcessingJob) -> None:
        self.runtime = runtime
        self.session = session
        self.job = job
        self.job_pk = job.id
        self.lock = asyncio.Lock()
        self.exam: ExamDefinition | None = None
        self.version_seen = job.version
        #: A write failed: the session must be rolled back and the row reloaded before the next.
        self.broken = False
        #: The callback delivery committed with the job's terminal state, to hand to the broker.
        self.delivery_id: UUID | None = None
        #: When this attempt's time limit ends (``time.monotonic()``).
        self.deadline = time.monotonic() + runtime.settings.job_time_limit
        #: The current AI call's wait for a slot: when it began, and how long it took once over.
        self.slot_wait_started: float | None = None
        self.slot_waited: float | None = None
        #: The current AI request has been sent (its slot granted): a stopping worker waits for it.
        self.ai_request_started = False
        #: The heartbeat the last failed write carried: if the connection broke after the database
        #: had committed it, the reloaded row shows it, and the write is known to be ours.
        self.unconfirmed_heartbeat: datetime | None = None

    def seconds_waited_for_slot(self) -> float:
        """How long the current AI call waited (or has been waiting so far) for its slot."""
        if self.slot_waited is not None:
            return self.slot_waited
        if self.slot_wait_started is not None:
            return time.monotonic() - self.slot_wait_started
        return 0.0

    def slot_deadline(self) -> float:
        """Until when the attempt may wait for an AI slot and still leave the call its timeout."""
        settings = self.runtime.settings
        latest = self.deadline - settings.ai_api_timeout - _CALL_MARGIN_SECONDS
        return max(latest, time.monotonic() + 1.0)

    async def save(self, change: Change, also: AlsoWrite | None = None) -> None:
        """Apply ``change`` to the row and commit; after a failed write, reload the row first.
        ``also`` writes what goes with the change in its transaction (a result row).

        Raises :class:`JobCancelledError` when the job was cancelled meanwhile, and
        ``StaleDataError`` when another worker changed it.
        """
        async with self.lock:
            if self.broken and not await self._reload():
                if self.job.status == "cancelled":
                    raise JobCancelledError
                raise StaleDataError("job taken over by another worker")
            change(self.job)
            heartbeat = None
            if self.job.status == "processing" and self.job.heartbeat_at is not None:
                heartbeat = self.job.heartbeat_at = utcnow()  # every write is a sign of life (a release clears it)
            try:
                await _write_job(self.session, self.job, also)
            except StaleDataError:
                self.broken = True
                if await self._cancelled():
                    raise JobCancelledError from None
                raise
            except BaseException:
                # (The row's attributes cannot be read now: the session needs a rollback first.)
                self.broken = True
                self.unconfirmed_heartbeat = heartbeat
                raise
            self.version_seen = self.job.version

    async def _cancelled(self) -> bool:
        """After a lost write: whether the job was cancelled (rather than taken over)."""
        try:
            await self.session.rollback()
            status = await self.session.scalar(
                select(ExamProcessingJob.status).where(ExamProcessingJob.id == self.job_pk)
            )
            await self.session.rollback()
        except Exception as exc:
            if not is_transient(exc):
                raise
            return False
        return status == "cancelled"

    def finish_with(self, delivery: CallbackDelivery | None) -> None:
        """Add the terminal state's callback delivery (if any) to the transaction being saved."""
        if delivery is not None:
            self.session.add(delivery)

    async def save_patiently(self, change: Change, within: float = 30.0) -> None:
        """Save what cannot be had again (a paid AI answer) through a database outage.

        A database that cannot be reached is waited for until the attempt's time limit; any
        other database error is tried again for ``within`` seconds.
        """
        refused_until = time.monotonic() + within
        tries = 0
        while True:
            try:
                await self.save(change)
            except Exception as exc:
                if not is_transient(exc):
                    raise
                tries += 1
                delay = backoff_seconds(tries, base=0.5, cap=_OUTAGE_POLL_CAP_SECONDS)
                deadline = self.deadline - 1.0 if _database_away(exc) else refused_until
                if time.monotonic() + delay > deadline:
                    raise
                if tries == 1:
                    log.warning("exam processing waiting for the database to store the AI answer", error=_name(exc))
                await asyncio.sleep(delay)
            else:
                return

    async def _reload(self) -> bool:
        await self.session.rollback()
        await self.session.refresh(self.job)
        # End the read's transaction: it would keep a pooled connection until the run's next
        # write, which may be the whole AI wait away (30 such runs empty a worker's pool).
        await self.session.commit()
        self.broken = False
        unconfirmed, self.unconfirmed_heartbeat = self.unconfirmed_heartbeat, None
        if (
            self.job.version == self.version_seen + 1
            and unconfirmed is not None
            and self.job.heartbeat_at == unconfirmed
        ):
            # The write whose answer the broken connection lost had been committed: it is ours.
            self.version_seen = self.job.version
        return self.job.version == self.version_seen

    async def recover(self) -> bool:
        """After an error: reload the row; ``False`` if another worker changed it since."""
        async with self.lock:
            return await self._reload()

    async def enter(self, step: Step) -> None:
        if step_index(self.job.current_step) < step_index(step):
            await self.save(lambda job: job.enter_step(step, utcnow()))
        structlog.contextvars.bind_contextvars(step=step)

    async def finish_step(self, step: Step, output: Change | None = None, *, patient: bool = False) -> None:
        """Store the step's ``output`` with its end of progress and enter the next step, in one write
        (the ranges are contiguous: a step ends where the next begins). ``patient``: see
        :meth:`save_patiently` (for what cannot be had again, a paid AI answer)."""
        following = PIPELINE_STEPS[PIPELINE_STEPS.index(step) + 1]

        def change(job: ExamProcessingJob) -> None:
            if output is not None:
                output(job)
            now = utcnow()
            job.update_progress(STEP_RANGES[step][1], now, step)
            job.enter_step(following, now)

        await (self.save_patiently(change) if patient else self.save(change))


_JOBS = cast("Table", ExamProcessingJob.__table__)
_WRITE_PROGRESS = (
    update(_JOBS)
    .where(_JOBS.c.id == bindparam("b_id"), _JOBS.c.version == bindparam("b_version"), _JOBS.c.status == "processing")
    .values(progress=bindparam("b_progress"), heartbeat_at=bindparam("b_now"), version=bindparam("b_next"))
)


_WATCHED = frozenset(WATCHED_COLUMNS)


async def _write_job(session: AsyncSession, job: ExamProcessingJob, also: AlsoWrite | None = None) -> None:
    """Write the job's changed attributes and commit: one ``UPDATE … WHERE id = … AND version = …``.

    What the ORM's flush of the one changed row does (the version check, ``updated_at``, the
    live-update announcement), as one Core statement built once per set of changed columns and run
    on the session's connection. ``also`` then writes its rows (a result) on that connection, and
    objects added to the session (a callback delivery) are flushed by the commit: one transaction.
    Raises ``StaleDataError`` when the row's version moved on (another worker, or a cancel).
    """
    state = inspect(job)
    changed = frozenset(state.committed_state)  # (the model maps columns only: no relationships)
    values: dict[str, Any] = {key: getattr(job, key) for key in changed}
    values["version"] = job.version + 1
    values.setdefault("updated_at", utcnow())
    connection = await session.connection()
    result = await connection.execute(
        _job_update(frozenset(values)),
        {**{f"v_{k}": v for k, v in values.items()}, "w_id": job.id, "w_version": job.version},
    )
    if result.rowcount != 1:
        raise StaleDataError(f"job {job.job_id} changed since it was read")
    for key, value in values.items():
        set_committed_value(job, key, value)
    # Written: the row is clean, as after a flush (what the ORM's own flush calls), so that the
    # commit's flush has nothing of the job's left to look at.
    state._commit_all(state.dict, session.sync_session.identity_map)
    if changed & _WATCHED:
        publish_written(session, {job.job_id: values["version"]})
    if also is not None:
        await also(connection)
    await session.commit()


@functools.cache
def _job_update(columns: frozenset[str]) -> Update:
    """``UPDATE exam_processing_jobs SET <columns> WHERE id = :w_id AND version = :w_version``."""
    return (
        update(_JOBS)
        .where(_JOBS.c.id == bindparam("w_id"), _JOBS.c.version == bindparam("w_version"))
        .values({name: bindparam(f"v_{name}") for name in sorted(columns)})
    )


class _ProgressWrites:
    """The AI-wait progress and heartbeat of every job of one runtime, written together.

    Each job's ticker hands its new value to :meth:`save` and waits for it to be written, as with
    :meth:`_JobRun.save` (same errors: :class:`JobCancelledError`, ``StaleDataError``, the
    database's own). What arrives within :data:`GATHER_SECONDS` is written in one transaction on
    a connection of its own: one ``UPDATE`` executed for many rows (each still checked against
    the version the job's run holds), one ``SELECT`` telling which rows were written, and one
    notification statement. A worker holding 500 jobs in the AI wait thus writes about five
    transactions a second instead of 500, on one connection.
    """

    def __init__(self, database: Database) -> None:
        self.database = database
        self._pending: list[tuple[_JobRun, int, asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def save(self, run: _JobRun, value: int) -> None:
        """Raise ``run``'s progress to ``value`` (and take its heartbeat)."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((run, value, future))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_pending())
        await future

    async def _write_pending(self) -> None:
        while self._pending:
            await asyncio.sleep(GATHER_SECONDS)
            batch, self._pending = self._pending, []
            try:
                await self._write(batch)
            except BaseException as exc:  # noqa: BLE001  (handed to every waiting ticker)
                for _, _, future in batch:
                    if not future.done():
                        future.set_exception(exc)

    async def _write(self, batch: list[tuple[_JobRun, int, asyncio.Future[None]]]) -> None:
        runs: dict[int, tuple[_JobRun, int, asyncio.Future[None]]] = {}
        alone: list[tuple[_JobRun, int, asyncio.Future[None]]] = []
        for run, value, future in batch:
            if future.done():
                continue
            if run.broken or run.lock.locked() or run.job_pk in runs:
                # After a failed write the run reloads its row first: its own save does that.
                alone.append((run, value, future))
                continue
            runs[run.job_pk] = (run, max(run.job.progress, value), future)
        if runs:
            await self._write_together(runs)
        for run, value, future in alone:
            try:
                await run.save(partial(_raise_progress, value))
            except BaseException as exc:  # noqa: BLE001  (the ticker's to handle)
                future.set_exception(exc)
            else:
                future.set_result(None)

    async def _write_together(self, runs: dict[int, tuple[_JobRun, int, asyncio.Future[None]]]) -> None:
        for run, _, _ in runs.values():
            await run.lock.acquire()  # free (checked above): taken at once
        now = utcnow()
        try:
            async with self.database.sessions() as session:
                params = [
                    {
                        "b_id": pk,
                        "b_version": run.version_seen,
                        "b_next": run.version_seen + 1,
                        "b_progress": value,
                        "b_now": now,
                    }
                    for pk, (run, value, _) in runs.items()
                ]
                await session.execute(_WRITE_PROGRESS, params)
                rows = await session.execute(
                    select(_JOBS.c.id, _JOBS.c.version, _JOBS.c.status, _JOBS.c.heartbeat_at).where(
                        _JOBS.c.id.in_(list(runs))
                    )
                )
                state = {row.id: row for row in rows}
                written = {
                    pk
                    for pk, (run, _, _) in runs.items()
                    if (row := state.get(pk)) is not None
                    and row.version == run.version_seen + 1
                    and row.heartbeat_at == now
                }
                publish_written(session, {runs[pk][0].job.job_id: runs[pk][0].version_seen + 1 for pk in written})
                await session.commit()
        except BaseException:
            for run, _, _ in runs.values():
                # Whether the commit landed is unknown: the run's next write reloads the row and
                # recognises this heartbeat as its own (see _JobRun._reload).
                run.broken = True
                run.unconfirmed_heartbeat = now
                run.lock.release()
            raise
        for pk, (run, value, future) in runs.items():
            if pk in written:
                version = run.version_seen + 1
                for name, new in (("progress", value), ("heartbeat_at", now), ("version", version)):
                    set_committed_value(run.job, name, new)
                run.version_seen = version
                future.set_result(None)
            else:
                run.broken = True
                row = state.get(pk)
                cancelled = row is not None and row.status == "cancelled"
                future.set_exception(JobCancelledError() if cancelled else StaleDataError("job taken over"))
            run.lock.release()


async def _validate(run: _JobRun) -> None:  # (its output, the exam, stays in memory)
    job = run.job
    async with run.runtime.database.sessions() as session:
        exam = await ExamService(session=session).get_definition(job.exam_code)
    if exam is None:
        raise PermanentJobError(JobError("exam_missing", {"code": job.exam_code}))
    if exam.status != "open":
        raise PermanentJobError(JobError("exam_closed", {"code": job.exam_code}))
    errors = validate_answers(exam, job.answers)
    if errors:
        raise PermanentJobError(JobError.answers_invalid([(e.field, e.key, dict(e.params)) for e in errors]))
    run.exam = exam


async def _grade(run: _JobRun) -> Change | None:
    if run.job.grading is not None:
        return None
    assert run.exam is not None
    grading = msgspec.to_builtins(grade(run.exam, run.job.answers))
    return lambda job: setattr(job, "grading", grading)


def _recommendation_request(run: _JobRun) -> RecommendationRequest:
    job = run.job
    assert run.exam is not None
    grading = msgspec.convert(job.grading, GradeSummary)
    title = localized(run.exam.title, job.locale, run.exam.code)
    return RecommendationRequest(exam_code=job.exam_code, exam_title=title, locale=job.locale, grading=grading)


async def _recommend(run: _JobRun) -> Change | None:
    job = run.job
    if job.recommendations is not None:
        return None
    request = _recommendation_request(run)
    runtime = run.runtime
    if runtime.ai is not None and runtime.stopping():
        raise _StopRequested
    if runtime.ai is None:
        metrics.AI_REQUESTS.labels(outcome="disabled").inc()
        items, source = rule_based_recommendations(request), "rule_based"
    else:
        try:
            items, source = await _call_ai(run, runtime.ai, request), "ai"
        except AICircuitOpenError:
            # SPEC: while the circuit is open, a job reaching the AI step uses the fallback at once.
            items, source = rule_based_recommendations(request), "rule_based_fallback"
            metrics.AI_FALLBACKS.labels(reason="circuit_open").inc()
            log.warning("exam processing used the rule-based fallback", reason="circuit_open")
    payload = {"source": source, "items": msgspec.to_builtins(items)}
    return lambda job: setattr(job, "recommendations", payload)


async def _guarded_request(run: _JobRun, ai: AIClient, request: RecommendationRequest) -> list[Any]:
    """One AI request inside the guard's limits: wait for a slot, call, give the slot back."""
    guard = run.runtime.guard
    if guard is None:
        run.ai_request_started = True
        return list(await ai.recommend(request))
    token = new_token()
    run.slot_wait_started = time.monotonic()
    try:
        admission = await _acquire_through_outages(run, guard, token)
    finally:
        run.slot_waited = time.monotonic() - run.slot_wait_started
    if run.runtime.stopping():
        # The worker began to stop while this job waited: give the slot back, call nothing. (Asked
        # here, with no wait before the call, so the ticker and this task never disagree.)
        await release(guard, token, "abandoned", trial=admission.trial, retry_after=None)
        raise _StopRequested
    run.ai_request_started = True
    outcome: Outcome = "abandoned"
    retry_after: float | None = None
    metrics.AI_IN_FLIGHT.inc()
    try:
        items = await ai.recommend(request)
    except AITransientError as exc:
        outcome, retry_after = ("rate_limited" if exc.status == 429 else "failure"), exc.retry_after
        raise
    except AIPermanentError:
        outcome = "success"  # the provider is up and answering; the answer was unusable
        raise
    else:
        outcome = "success"
        return list(items)
    finally:
        metrics.AI_IN_FLIGHT.dec()
        await release(guard, token, outcome, trial=admission.trial, retry_after=retry_after)


async def _acquire_through_outages(run: _JobRun, guard: AIGuard, token: str) -> Admission:
    """:func:`acquire` a slot; while the guard's store cannot be reached, wait for it as for a slot
    (the job keeps its attempt), until the attempt's slot deadline."""
    settings = run.runtime.settings
    tries = 0
    while True:
        try:
            return await acquire(
                guard, token, wait_when_open=settings.ai_fallback == "fail", deadline=run.slot_deadline()
            )
        except AIGuardUnavailableError as exc:
            cause = exc.__cause__ or exc
            if not is_transient(cause):
                raise TransientJobError(
                    JobError("temporary_error", {"reason": f"AI guard unavailable: {exc}"})
                ) from exc
            tries += 1
            delay = backoff_seconds(tries, base=0.5, cap=_OUTAGE_POLL_CAP_SECONDS)
            if time.monotonic() + delay > run.slot_deadline():
                raise AISlotWaitExpiredError from exc
            if tries == 1:
                log.warning("exam processing waiting for the AI guard", error=_name(cause))
            await asyncio.sleep(delay)


async def _call_ai(run: _JobRun, ai: AIClient, request: RecommendationRequest) -> list[Any]:
    runtime = run.runtime
    started = time.monotonic()
    start_progress = run.job.progress
    # The wait for a slot happens inside the answer task, so the ticker below keeps the step's
    # progress and the heartbeat moving through it; the curve is stretched by the time waited.
    run.slot_waited = run.slot_wait_started = None
    run.ai_request_started = False
    answer = asyncio.create_task(_guarded_request(run, ai, request))

    async def tick() -> None:
        # Ends when the answer is in, never cancelled: a cancel landing inside a commit would
        # leave the shared session unusable for the steps after this one. Each tick is a write,
        # so a cancelled job (or one taken over) ends it with an error within a second.
        while True:
            done, _ = await asyncio.wait({answer}, timeout=TICK_SECONDS)
            if done:
                return
            if runtime.stopping() and not run.ai_request_started:
                raise _StopRequested  # still waiting for a slot: nothing paid yet, hand it back
            value = ai_wait_progress(
                time.monotonic() - started,
                runtime.expected_ai_seconds,
                runtime.settings.ai_api_timeout + run.seconds_waited_for_slot(),
                start_progress,
            )
            try:
                await runtime.progress_writes.save(run, value)
            except Exception as exc:
                # A database outage must not cost the AI answer on its way: keep waiting for it.
                if not is_transient(exc):
                    raise
                log.warning("exam processing progress not saved", error=_name(exc))

    ticker = asyncio.create_task(tick())
    try:
        await asyncio.wait({answer, ticker}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        # The ticker failed (job cancelled or taken over), or this attempt is being cancelled
        # (time limit): the AI request is abandoned, and its answer, if any, discarded.
        if not answer.done():
            answer.cancel()
        try:
            await asyncio.shield(ticker)
        except asyncio.CancelledError:
            ticker.cancel()
            raise
        except BaseException:  # noqa: BLE001, S110  (the ticker's own error is raised below)
            pass
        if answer.done() and not answer.cancelled():
            answer.exception()  # retrieved, so an unused failure is not reported as lost
    if (ticker_error := ticker.exception()) is not None:
        raise ticker_error
    try:
        items = answer.result()
    except AITransientError as exc:
        raise TransientJobError(JobError("ai_unavailable", {"reason": exc.reason}), exc.retry_after) from exc
    except AIInvalidAnswerError as exc:
        # Garbage from a model is often not repeated: asked again, then handled per AI_FALLBACK.
        raise TransientJobError(JobError("ai_invalid_answer", {"error": str(exc)})) from exc
    except AIPermanentError as exc:
        raise PermanentJobError(JobError("ai_invalid_answer", {"error": str(exc)})) from exc
    runtime.observe_ai_seconds(time.monotonic() - started)
    return list(items)


async def _finalize(run: _JobRun) -> None:
    job = run.job
    grading = dict(job.grading or {})
    recommendations = job.recommendations or {"source": "rule_based", "items": []}
    result = {
        "score": _number(grading["score"]),
        "max_score": _number(grading["max_score"]),
        "percentage": float(grading["percentage"]),
        "passed": bool(grading["passed"]),
        "topics": [
            {**t, "score": _number(t["score"]), "max_score": _number(t["max_score"])} for t in grading["topics"]
        ],
        "questions": [{**q, "awarded": _number(q["awarded"]), "max": _number(q["max"])} for q in grading["questions"]],
        "recommendations": recommendations["items"],
        "recommendations_source": recommendations["source"],
        "processed_at": utcnow().isoformat().replace("+00:00", "Z"),
    }
    if recommendations["source"] == "rule_based_fallback":
        result["recommendations_note"] = gettext(FALLBACK_NOTE_KEY, job.locale)
    delivery: list[CallbackDelivery] = []

    completed: list[datetime] = []

    def complete(job: ExamProcessingJob) -> None:
        # One transaction: the job completes, its result row is written, its callback queued.
        now = utcnow()
        completed[:] = [now]
        job.mark_completed(result, now)
        delivery[:] = [d for d in (new_delivery(job, now),) if d is not None]
        run.finish_with(delivery[0] if delivery else None)

    await run.save(complete, also=lambda connection: write_result(connection, job, result, completed[0]))
    run.delivery_id = delivery[0].delivery_id if delivery else None


def _raise_progress(value: int, job: ExamProcessingJob) -> None:
    job.update_progress(value, utcnow())


def _number(value: float) -> float | int:
    """Whole numbers as ints (``10`` rather than ``10.0``), as in SPEC.md's example."""
    return int(value) if float(value).is_integer() else float(value)


#: Each step returns what it adds to the row (stored with the step's end) or ``None``.
_STEPS: dict[Step, Callable[[_JobRun], Awaitable[Change | None]]] = {
    "validating_exam": _validate,
    "processing_answers": _grade,
    "getting_ai_recommendations": _recommend,
    "finalizing_results": _finalize,
}


async def _run_steps_through_outages(run: _JobRun) -> None:
    """Run the steps; when the database cannot be reached, wait for it and carry on where the
    row says (the same attempt: an outage is not the job's failure)."""
    while True:
        try:
            await _run_steps(run)
        except Exception as exc:
            if not _database_away(exc):
                raise
            await _wait_for_database(run, exc)
        else:
            return


async def _wait_for_database(run: _JobRun, error: BaseException) -> None:
    """Poll with back-off until the row can be read again (the time limit bounds the wait).

    Raises ``StaleDataError`` when the job was taken over meanwhile (a stale heartbeat freed it),
    :class:`JobCancelledError` when it was cancelled, :class:`_StopRequested` when the worker
    stops meanwhile.
    """
    started = time.monotonic()
    log.warning("exam processing waiting for the database", error=_name(error))
    tries = 0
    while True:
        if run.runtime.stopping():
            raise _StopRequested
        tries += 1
        await asyncio.sleep(backoff_seconds(tries, base=0.5, cap=_OUTAGE_POLL_CAP_SECONDS))
        try:
            same = await run.recover()
        except Exception as exc:
            if not _database_away(exc):
                raise
            continue
        if not same:
            if run.job.status == "cancelled":
                raise JobCancelledError
            raise StaleDataError("job taken over by another worker")
        log.info("exam processing resumed after a database outage", waited_seconds=round(time.monotonic() - started, 3))
        return


async def _run_steps(run: _JobRun) -> None:
    # Resume at the step the job is in: earlier steps are done and their output is on the row.
    # Validation always runs, since later steps need the exam definition.
    for step in PIPELINE_STEPS:
        if step_index(step) < step_index(run.job.current_step):
            if step == "validating_exam":
                await _validate(run)  # done before, but the later steps need the exam
            continue
        started = time.monotonic()
        await run.enter(step)  # (no write when the previous step's end already entered it)
        output = await _STEPS[step](run)
        if step != "finalizing_results":
            await run.finish_step(step, output, patient=step == "getting_ai_recommendations")
        duration = time.monotonic() - started
        metrics.JOB_STAGE_DURATION.labels(stage=step).observe(duration)
        log.info("exam processing step", step=step, progress=run.job.progress, duration_seconds=round(duration, 3))


async def run_job(runtime: PipelineRuntime, job_id: UUID) -> None:
    """Run (or resume) one job; raise :class:`RetryLater` when it must run again later."""
    settings = runtime.settings
    async with runtime.database.sessions() as session:
        service = JobService(session=session)
        job = await service.claim(job_id, stale_after=settings.job_stale_after)
        if job is None:
            await _log_skipped(service, job_id, "finished, unknown or running elsewhere")
            return
        if job.current_step == "queued":
            job.enter_step("validating_exam", utcnow())  # in the claim's write
        try:
            await _write_job(session, job)
        except StaleDataError:
            await session.rollback()
            await _log_skipped(service, job_id, "claimed by another worker")
            return
        structlog.contextvars.bind_contextvars(
            job_id=str(job.job_id), exam_code=job.exam_code, attempt=job.attempts, step=job.current_step
        )
        log.info("exam processing started", progress=job.progress)
        run = _JobRun(runtime, session, job)
        started = time.monotonic()
        try:
            try:
                async with asyncio.timeout(settings.job_time_limit):
                    await _run_steps_through_outages(run)
            except JobCancelledError:
                raise
            except StaleDataError:
                log.warning("exam processing abandoned", reason="job was taken over by another worker")
                return
            except _StopRequested:
                await _hand_back(run)
            except _RETRYABLE as exc:
                await _on_transient(run, _describe(exc, settings), getattr(exc, "retry_after", None))
            except PermanentJobError as exc:
                await _on_failure(run, exc.error)
            except AISlotWaitExpiredError:
                await _on_slot_wait_expired(run)
            except Exception as exc:
                if is_transient(exc):  # the database, broker or a client away (core.retry decides)
                    await _on_transient(run, _describe(exc, settings), None)
                else:  # a bug must not leave the job hanging; record it and fail
                    log.exception("exam processing crashed")
                    await _on_failure(run, JobError("internal_error", {"error": f"{type(exc).__name__}: {exc}"}))
        except JobCancelledError:
            # Counted (exams_jobs_finished) and called back by whoever cancelled it.
            log.info("exam processing cancelled", seconds_after_start=round(time.monotonic() - started, 3))
            return
        finally:
            await _hand_over_callback(runtime, run.delivery_id)
        if job.status == "completed":
            duration = (utcnow() - job.created_at).total_seconds()
            metrics.JOBS_FINISHED.labels(status="completed").inc()
            metrics.JOB_DURATION.observe(duration)
            log.info(
                "exam processing completed",
                progress=100,
                duration_seconds=round(time.monotonic() - started, 3),
                job_seconds=round(duration, 3),
            )


async def _log_skipped(service: JobService, job_id: UUID, reason: str) -> None:
    job = await service.get_by_job_id(job_id)
    log.info(
        "exam processing skipped",
        job_id=str(job_id),
        exam_code=job.exam_code if job else None,
        step=job.current_step if job else None,
        attempt=job.attempts if job else None,
        status=job.status if job else None,
        reason=reason,
    )


async def _hand_over_callback(runtime: PipelineRuntime, delivery_id: UUID | None) -> None:
    """Send the committed delivery's message; if that fails, the scheduler re-sends it later."""
    if delivery_id is None or runtime.send_callback is None:
        return
    try:
        await asyncio.to_thread(runtime.send_callback, delivery_id)
    except Exception as exc:  # noqa: BLE001  (any broker failure: the row stays due)
        log.warning("exam callback enqueue failed", delivery_id=str(delivery_id), error=f"{type(exc).__name__}: {exc}")


def _describe(exc: BaseException, settings: Settings) -> JobError:
    if isinstance(exc, TransientJobError):
        return exc.error
    if isinstance(exc, TimeoutError):
        return JobError("time_limit", {"seconds": f"{settings.job_time_limit:g}"})
    if isinstance(exc, DBAPIError) or _database_away(exc):
        return JobError("database_unavailable", {"error": _name(exc)})
    return JobError("temporary_error", {"reason": str(exc) or type(exc).__name__})


def _database_away(exc: BaseException) -> bool:
    """The database (not the AI, not the guard) could not be reached, is restarting or is full."""
    return isinstance(exc, DATABASE_ERRORS) and is_connection_problem(exc)


def _name(exc: BaseException) -> str:
    """The driver's own error class behind SQLAlchemy's wrapper (``CannotConnectNowError``, …)."""
    inner = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    return type(inner.__cause__ if inner.__cause__ is not None else inner).__name__


async def _still_ours(run: _JobRun) -> bool:
    """Reload the job after a failed write; ``False`` (logged) when another worker has taken it.
    Raises :class:`JobCancelledError` when it was cancelled meanwhile."""
    if await run.recover():
        return True
    if run.job.status == "cancelled":
        raise JobCancelledError
    log.warning("exam processing abandoned", reason="job was taken over by another worker")
    return False


async def _on_transient(run: _JobRun, reason: JobError, retry_after: float | None) -> None:
    settings = run.runtime.settings
    try:
        # First put the session back in order: a failed write leaves it unusable.
        if not await _still_ours(run):
            return
    except Exception as exc:
        if not is_transient(exc):
            raise
        # The database is away: the retry claims the job once its heartbeat is stale.
        log.warning("exam processing retry not recorded", error=reason.english)
        metrics.JOB_RETRIES.inc()
        raise RetryLater(run.runtime.retry_delay(1, retry_after)) from None
    job = run.job
    if job.attempts > settings.job_max_retries:
        if _falls_back(run, reason):
            await _complete_with_fallback(run, reason)
            return
        await _on_failure(run, reason.exhausted(job.attempts), recovered=True)
        return
    delay = run.runtime.retry_delay(job.attempts, retry_after)
    await run.save(lambda j: j.release_for_retry(reason))
    metrics.JOB_RETRIES.inc()
    log.warning("exam processing retry scheduled", error=reason.english, retry_in_seconds=round(delay, 2))
    raise RetryLater(delay)


async def _on_failure(run: _JobRun, error: JobError, *, recovered: bool = False) -> None:
    if not recovered and not await run.recover():
        if run.job.status == "cancelled":
            raise JobCancelledError
        log.warning("exam processing abandoned", reason="job was taken over by another worker")
        return
    job = run.job
    delivery: list[CallbackDelivery] = []

    def fail(j: ExamProcessingJob) -> None:
        now = utcnow()
        j.mark_failed(error, now)
        delivery[:] = [d for d in (new_delivery(j, now),) if d is not None]
        run.finish_with(delivery[0] if delivery else None)

    await run.save(fail)
    run.delivery_id = delivery[0].delivery_id if delivery else None
    metrics.JOBS_FINISHED.labels(status="failed").inc()
    metrics.JOB_DURATION.observe((utcnow() - job.created_at).total_seconds())
    log.error("exam processing failed", error=error.english, error_code=error.code, failed_step=job.failed_step)


def _falls_back(run: _JobRun, reason: JobError) -> bool:
    """Whether a job out of retries completes with the rule-based fallback (SPEC ``AI_FALLBACK``)."""
    job = run.job
    return (
        run.runtime.settings.ai_fallback == "rule_based"
        and run.runtime.ai is not None
        and run.exam is not None
        and job.current_step == "getting_ai_recommendations"
        and job.grading is not None
        and job.recommendations is None
        and reason.code in ("ai_unavailable", "ai_invalid_answer", "time_limit")
    )


async def _complete_with_fallback(run: _JobRun, reason: JobError) -> None:
    """The AI step ran out of retries: finish the job with the grade and rule-based recommendations."""
    items = rule_based_recommendations(_recommendation_request(run))
    payload = {"source": "rule_based_fallback", "items": msgspec.to_builtins(items)}
    await run.finish_step(
        "getting_ai_recommendations", lambda job: setattr(job, "recommendations", payload), patient=True
    )
    await _finalize(run)
    metrics.AI_FALLBACKS.labels(reason="retries_exhausted").inc()
    log.warning(
        "exam processing used the rule-based fallback",
        reason="retries_exhausted",
        error=reason.english,
        attempts=run.job.attempts,
    )


async def _hand_back(run: _JobRun) -> None:
    """The worker is stopping: release the job at once, without counting this attempt, so that
    another worker resumes it now (its grading, and any AI answer stored, are kept)."""

    def release(job: ExamProcessingJob) -> None:
        job.heartbeat_at = None
        job.attempts = max(job.attempts - 1, 0)

    try:
        if not await _still_ours(run):
            return
        await run.save(release)
    except Exception as exc:
        if not is_transient(exc):
            raise
        log.warning("exam processing handed back without releasing it", error=_name(exc))
    else:
        log.info("exam processing handed back", reason="worker stopping", progress=run.job.progress)
    raise HandedBack


async def _on_slot_wait_expired(run: _JobRun) -> None:
    """No AI slot came within this attempt: run again later, without counting the attempt."""
    if not await run.recover():
        if run.job.status == "cancelled":
            raise JobCancelledError
        log.warning("exam processing abandoned", reason="job was taken over by another worker")
        return

    def defer(job: ExamProcessingJob) -> None:
        job.release_for_retry(JobError("ai_busy", {}))
        job.attempts = max(job.attempts - 1, 0)

    await run.save(defer)
    delay = run.runtime.retry_delay(1, None)
    log.info("exam processing waiting for an AI slot", retry_in_seconds=round(delay, 2))
    raise RetryLater(delay)
