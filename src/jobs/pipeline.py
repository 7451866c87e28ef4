"""The four pipeline steps of one exam job, with progress, heartbeats, resumption and retries.

``run_job`` is what the actor calls. It claims the job (one worker at a time), runs the steps
not yet done (the grading and any AI answer already received are kept on the row, so a retry
never redoes them), and ends in one of three ways: completed; released for a retry (a
transient error, ``attempts`` not yet exhausted), which raises :class:`RetryLater`; or failed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any
from uuid import UUID

import msgspec
import structlog
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.exc import StaleDataError

from ai_client import (
    AIClient,
    AIPermanentError,
    AITransientError,
    GradeSummary,
    RecommendationRequest,
    rule_based_recommendations,
)
from core import metrics
from core.db import Database
from core.retry import TRANSIENT_DATABASE_ERRORS, backoff_seconds
from core.settings import Settings
from exams.definitions import ExamDefinition
from exams.grading import grade, validate_answers
from exams.services import ExamService
from i18n import gettext, localized
from jobs.models import ExamProcessingJob, utcnow
from jobs.progress import PIPELINE_STEPS, STEP_RANGES, Step, ai_wait_progress, step_index
from jobs.services import JobService

__all__ = ("PermanentJobError", "PipelineRuntime", "RetryLater", "TransientJobError", "run_job")

log = structlog.get_logger("jobs.pipeline")

#: Heartbeat and progress updates during the AI wait (SPEC: at least every 2 s).
TICK_SECONDS = 1.0


class TransientJobError(Exception):
    """Raised when a step failed for a reason that may pass (timeout, AI overloaded, …)."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class PermanentJobError(Exception):
    """Raised when a step failed for a reason a retry cannot fix (exam gone, invalid AI answer)."""


#: Failures that end an attempt but not the job: it is retried while attempts remain.
_RETRYABLE: tuple[type[BaseException], ...] = (TransientJobError, TimeoutError, *TRANSIENT_DATABASE_ERRORS)


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
    _expected_ai_seconds: float = field(default=0.0)

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

    def retry_delay(self, attempts: int, retry_after: float | None) -> float:
        """Back-off before the next attempt: exponential with jitter, at least ``Retry-After``."""
        return backoff_seconds(attempts, base=self.settings.job_retry_backoff, cap=300.0, at_least=retry_after)


class _JobRun:
    """One attempt at one job: the session, the row, and a lock serialising writes to it."""

    def __init__(self, runtime: PipelineRuntime, session: AsyncSession, job: ExamProcessingJob) -> None:
        self.runtime = runtime
        self.session = session
        self.job = job
        self.lock = asyncio.Lock()
        self.exam: ExamDefinition | None = None
        self.version_seen = job.version
        #: A write failed: the session must be rolled back and the row reloaded before the next.
        self.broken = False

    async def save(self, change: Callable[[ExamProcessingJob], None]) -> None:
        """Apply ``change`` to the row and commit; after a failed write, reload the row first.

        Raises ``StaleDataError`` when another worker changed the job in between.
        """
        async with self.lock:
            if self.broken and not await self._reload():
                raise StaleDataError("job taken over by another worker")
            change(self.job)
            try:
                await self.session.commit()
            except BaseException:
                self.broken = True
                raise
            self.version_seen = self.job.version

    async def save_patiently(self, change: Callable[[ExamProcessingJob], None], within: float = 30.0) -> None:
        """Save what cannot be had again (a paid AI answer) through a short database outage."""
        deadline = time.monotonic() + within
        tries = 0
        while True:
            try:
                await self.save(change)
            except TRANSIENT_DATABASE_ERRORS:
                tries += 1
                delay = backoff_seconds(tries, base=0.5, cap=5.0, jitter=False)
                if time.monotonic() + delay > deadline:
                    raise
                log.warning("exam processing waiting for the database to store the AI answer")
                await asyncio.sleep(delay)
            else:
                return

    async def _reload(self) -> bool:
        await self.session.rollback()
        await self.session.refresh(self.job)
        self.broken = False
        return self.job.version == self.version_seen

    async def recover(self) -> bool:
        """After an error: reload the row; ``False`` if another worker changed it since."""
        async with self.lock:
            return await self._reload()

    async def enter(self, step: Step) -> None:
        if step_index(self.job.current_step) < step_index(step):
            await self.save(lambda job: job.enter_step(step, utcnow()))
        structlog.contextvars.bind_contextvars(step=step)

    async def finish_step(self, step: Step) -> None:
        await self.save(lambda job: job.update_progress(STEP_RANGES[step][1], utcnow(), step))


async def _validate(run: _JobRun) -> None:
    job = run.job
    async with run.runtime.database.sessions() as session:
        exam = await ExamService(session=session).get_definition(job.exam_code)
    if exam is None:
        raise PermanentJobError(gettext("job.error.exam_missing", "en", code=job.exam_code))
    if exam.status != "open":
        raise PermanentJobError(gettext("validation.exam_closed", "en", code=job.exam_code))
    errors = validate_answers(exam, job.answers)
    if errors:
        details = "; ".join(f"{e.field}: {gettext(e.key, 'en', **e.params)}" for e in errors)
        raise PermanentJobError(gettext("job.error.answers_invalid", "en", details=details))
    run.exam = exam


async def _grade(run: _JobRun) -> None:
    if run.job.grading is not None:
        return
    assert run.exam is not None
    grading = grade(run.exam, run.job.answers)
    await run.save(lambda job: setattr(job, "grading", msgspec.to_builtins(grading)))


async def _recommend(run: _JobRun) -> None:
    job = run.job
    if job.recommendations is not None:
        return
    assert run.exam is not None
    grading = msgspec.convert(job.grading, GradeSummary)
    title = localized(run.exam.title, job.locale, run.exam.code)
    request = RecommendationRequest(exam_code=job.exam_code, exam_title=title, locale=job.locale, grading=grading)
    runtime = run.runtime
    if runtime.ai is None:
        metrics.AI_REQUESTS.labels(outcome="disabled").inc()
        items, source = rule_based_recommendations(request), "rule_based"
    else:
        items, source = await _call_ai(run, runtime.ai, request), "ai"
    payload = {"source": source, "items": msgspec.to_builtins(items)}
    await run.save_patiently(lambda job: setattr(job, "recommendations", payload))


async def _call_ai(run: _JobRun, ai: AIClient, request: RecommendationRequest) -> list[Any]:
    runtime = run.runtime
    started = time.monotonic()
    start_progress = run.job.progress

    stop = asyncio.Event()

    async def tick() -> None:
        # Stopped by an event, never cancelled: a cancel landing inside a commit would leave
        # the shared session unusable for the steps after this one.
        while True:
            try:
                await asyncio.wait_for(stop.wait(), TICK_SECONDS)
            except TimeoutError:
                pass
            else:
                return
            value = ai_wait_progress(
                time.monotonic() - started,
                runtime.expected_ai_seconds,
                runtime.settings.ai_api_timeout,
                start_progress,
            )
            try:
                await run.save(partial(_raise_progress, value))
            except TRANSIENT_DATABASE_ERRORS as exc:
                # A database blip must not cost the AI answer on its way: keep waiting for it.
                log.warning("exam processing progress not saved", error=type(exc).__name__)

    ticker = asyncio.create_task(tick())
    try:
        items = await ai.recommend(request)
    except AITransientError as exc:
        raise TransientJobError(f"AI request failed: {exc.reason}", exc.retry_after) from exc
    except AIPermanentError as exc:
        raise PermanentJobError(f"AI answer unusable: {exc}") from exc
    finally:
        stop.set()
        # If this attempt itself is being cancelled (time limit), the ticker must not outlive it.
        try:
            await asyncio.shield(ticker)
        except asyncio.CancelledError:
            ticker.cancel()
            raise
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
    await run.save(lambda j: j.mark_completed(result, utcnow()))


def _raise_progress(value: int, job: ExamProcessingJob) -> None:
    job.update_progress(value, utcnow())


def _number(value: float) -> float | int:
    """Whole numbers as ints (``10`` rather than ``10.0``), as in SPEC.md's example."""
    return int(value) if float(value).is_integer() else float(value)


_STEPS: dict[Step, Callable[[_JobRun], Awaitable[None]]] = {
    "validating_exam": _validate,
    "processing_answers": _grade,
    "getting_ai_recommendations": _recommend,
    "finalizing_results": _finalize,
}


async def _run_steps(run: _JobRun) -> None:
    # Resume at the step the job is in: earlier steps are done and their output is on the row.
    # Validation always runs, since later steps need the exam definition.
    for step in PIPELINE_STEPS:
        if step_index(step) < step_index(run.job.current_step):
            if step == "validating_exam":
                await _validate(run)  # done before, but the later steps need the exam
            continue
        started = time.monotonic()
        await run.enter(step)
        await _STEPS[step](run)
        if step != "finalizing_results":
            await run.finish_step(step)
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
        try:
            await session.commit()
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
            async with asyncio.timeout(settings.job_time_limit):
                await _run_steps(run)
        except StaleDataError:
            log.warning("exam processing abandoned", reason="job was taken over by another worker")
            return
        except _RETRYABLE as exc:
            await _on_transient(run, _describe(exc, settings), getattr(exc, "retry_after", None))
        except PermanentJobError as exc:
            await _on_failure(run, str(exc))
        except Exception as exc:  # a bug must not leave the job hanging; record it and fail
            log.exception("exam processing crashed")
            await _on_failure(run, f"internal error: {type(exc).__name__}: {exc}")
        else:
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


def _describe(exc: BaseException, settings: Settings) -> str:
    if isinstance(exc, TimeoutError) and not isinstance(exc, TransientJobError):
        return f"attempt stopped after the job time limit of {settings.job_time_limit:g} s"
    if isinstance(exc, DBAPIError):
        return f"database error: {type(exc.orig).__name__ if exc.orig else type(exc).__name__}"
    return str(exc) or type(exc).__name__


async def _on_transient(run: _JobRun, reason: str, retry_after: float | None) -> None:
    settings = run.runtime.settings
    try:
        # First put the session back in order: a failed write leaves it unusable.
        if not await run.recover():
            log.warning("exam processing abandoned", reason="job was taken over by another worker")
            return
    except TRANSIENT_DATABASE_ERRORS:
        # The database is away: the heartbeat goes stale and the reconciler re-sends the job.
        log.warning("exam processing retry not recorded", error=reason)
        metrics.JOB_RETRIES.inc()
        raise RetryLater(run.runtime.retry_delay(1, retry_after)) from None
    job = run.job
    if job.attempts > settings.job_max_retries:
        message = gettext("job.error.retries_exhausted", "en", attempts=job.attempts, reason=reason)
        await _on_failure(run, message, recovered=True)
        return
    delay = run.runtime.retry_delay(job.attempts, retry_after)
    await run.save(lambda j: j.release_for_retry(reason))
    metrics.JOB_RETRIES.inc()
    log.warning("exam processing retry scheduled", error=reason, retry_in_seconds=round(delay, 2))
    raise RetryLater(delay)


async def _on_failure(run: _JobRun, message: str, *, recovered: bool = False) -> None:
    if not recovered and not await run.recover():
        log.warning("exam processing abandoned", reason="job was taken over by another worker")
        return
    job = run.job
    await run.save(lambda j: j.mark_failed(message, utcnow()))
    metrics.JOBS_FINISHED.labels(status="failed").inc()
    metrics.JOB_DURATION.observe((utcnow() - job.created_at).total_seconds())
    log.error("exam processing failed", error=message, failed_step=job.failed_step)
