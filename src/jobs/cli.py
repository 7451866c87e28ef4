"""``exams jobs …`` (list, show, retry, cleanup) and ``exams scheduler`` (reconciler and daily cleanup)."""

from __future__ import annotations

import asyncio
import sys
from datetime import timedelta
from uuid import UUID

import click
import msgspec
import structlog
from sqlalchemy.ext.asyncio import AsyncEngine

from core.commands import load_settings_or_exit, run_async
from core.db import create_engine, session_scope
from core.settings import Settings
from jobs.leader import LeaderLock
from jobs.models import ExamProcessingJob, InvalidTransitionError, utcnow
from jobs.services import JobService

__all__ = ("cleanup_finished", "daily_cleanup", "jobs", "scheduler")

log = structlog.get_logger("jobs.cli")
CLEANUP_BATCH = 1000


def _job_id(raw: str) -> UUID:
    try:
        return UUID(raw)
    except ValueError:
        raise click.BadParameter(f"{raw!r} is not a job id (a UUID)") from None


def _row(job: ExamProcessingJob) -> str:
    created = job.created_at.strftime("%Y-%m-%d %H:%M:%S")
    return f"{job.job_id}  {job.exam_code:<12} {job.status:<10} {job.progress:>3}%  {job.current_step:<27} {created}"


@click.group()
def jobs() -> None:
    """Inspect and operate exam-processing jobs."""


@jobs.command("list")
@click.option("--status", type=click.Choice(["pending", "processing", "completed", "failed"]))
@click.option("--limit", default=10, show_default=True, type=click.IntRange(1, 1000))
def list_jobs(status: str | None, limit: int) -> None:
    """The most recent jobs (newest first)."""
    settings = load_settings_or_exit()

    async def go() -> list[str]:
        engine = create_engine(settings)
        try:
            async with session_scope(engine) as session:
                return [_row(j) for j in await JobService(session=session).list_recent(status, limit)]
        finally:
            await engine.dispose()

    rows = run_async(go)
    click.echo(f"{'job_id':<36}  {'exam_code':<12} {'status':<10} {'prog':>4}  {'current_step':<27} created_at")
    for line in rows:
        click.echo(line)
    if not rows:
        click.echo("(no jobs)")


@jobs.command("show")
@click.argument("job_id")
def show_job(job_id: str) -> None:
    """Everything about one job, as JSON (the submitted answers are left out)."""
    settings = load_settings_or_exit()
    uid = _job_id(job_id)

    async def go() -> dict[str, object] | None:
        engine = create_engine(settings)
        try:
            async with session_scope(engine) as session:
                job = await JobService(session=session).get_by_job_id(uid)
                if job is None:
                    return None
                data = job.to_dict(exclude={"answers", "request_fingerprint", "version"})
                data["answered_questions"] = len(job.answers)
                return data
        finally:
            await engine.dispose()

    data = run_async(go)
    if data is None:
        click.echo(f"exams: no job {job_id}", err=True)
        sys.exit(1)
    click.echo(msgspec.json.format(msgspec.json.encode(data), indent=2).decode())


@jobs.command("retry")
@click.argument("job_id", required=False)
@click.option("--failed", "all_failed", is_flag=True, help="Retry every failed job.")
def retry_jobs(job_id: str | None, all_failed: bool) -> None:
    """Re-run a failed job (or every failed job); each resumes at the step that failed."""
    if bool(job_id) == all_failed:
        raise click.UsageError("give either a JOB_ID or --failed")
    settings = load_settings_or_exit()

    async def go() -> tuple[list[UUID], list[str]]:
        from jobs.broker import create_broker
        from jobs.dispatch import JobRef, dispatch

        engine = create_engine(settings)
        problems: list[str] = []
        try:
            async with session_scope(engine) as session:
                service = JobService(session=session)
                ids = [_job_id(job_id)] if job_id else list(await service.failed_job_ids(limit=100_000))
                retried: list[JobRef] = []
                for uid in ids:
                    job = await service.get_by_job_id(uid)
                    if job is None:
                        problems.append(f"no job {uid}")
                        continue
                    try:
                        await service.retry(job)
                    except InvalidTransitionError as exc:
                        problems.append(str(exc))
                        continue
                    retried.append(JobRef.of(job))
            if retried and settings.queue_connection != "embedded":
                await dispatch(create_broker(settings), engine, retried)
            return [ref.job_id for ref in retried], problems
        finally:
            await engine.dispose()

    retried, problems = run_async(go)
    for line in problems:
        click.echo(f"exams: {line}", err=True)
    where = "queued" if settings.queue_connection != "embedded" else "pending (the running server picks them up)"
    click.echo(f"{len(retried)} job(s) {where}")
    if problems and not retried:
        sys.exit(1)


async def cleanup_finished(engine: AsyncEngine, older_than_days: int, *, dry_run: bool) -> int:
    """Delete finished jobs older than the cutoff in small batches (short locks); return the count."""
    cutoff = utcnow() - timedelta(days=older_than_days)
    if dry_run:
        async with session_scope(engine) as session:
            return await JobService(session=session).count_finished_before(cutoff)
    total = 0
    while True:
        async with session_scope(engine) as session:
            deleted = await JobService(session=session).delete_finished_batch(cutoff, CLEANUP_BATCH)
        total += deleted
        if deleted < CLEANUP_BATCH:
            return total
        await asyncio.sleep(0.05)  # let concurrent writers in between batches


@jobs.command("cleanup")
@click.option("--older-than-days", type=click.IntRange(0, None), help="Default: JOB_RETENTION_DAYS.")
@click.option("--dry-run", is_flag=True, help="Only count what would be deleted.")
def cleanup(older_than_days: int | None, dry_run: bool) -> None:
    """Delete completed and failed jobs that finished more than N days ago."""
    settings = load_settings_or_exit()
    days = settings.job_retention_days if older_than_days is None else older_than_days

    async def go() -> int:
        engine = create_engine(settings)
        try:
            return await cleanup_finished(engine, days, dry_run=dry_run)
        finally:
            await engine.dispose()

    count = run_async(go)
    verb = "would delete" if dry_run else "deleted"
    click.echo(f"{verb} {count} job(s) finished more than {days} day(s) ago")


async def daily_cleanup(engine: AsyncEngine, settings: Settings) -> int:
    """Delete finished jobs older than ``JOB_RETENTION_DAYS`` and log how many."""
    deleted = await cleanup_finished(engine, settings.job_retention_days, dry_run=False)
    log.info("cleanup finished", deleted=deleted, older_than_days=settings.job_retention_days)
    return deleted


async def run_scheduler(settings: Settings, *, reconcile_every: float = 10.0, cleanup_every: float = 86_400.0) -> None:
    """Reconcile every few seconds and clean up daily, forever, while holding the leader lock."""
    from jobs.broker import create_broker
    from jobs.dispatch import reconcile

    # Embedded: the in-memory queue lives in `exams serve`, which reconciles itself; a separate
    # scheduler process can only do the cleanup.
    broker = create_broker(settings) if settings.queue_connection != "embedded" else None
    if broker is None:
        log.info("scheduler in embedded mode: cleanup only (exams serve re-sends stuck jobs itself)")
    engine = create_engine(settings)
    lock = LeaderLock(engine)
    loop = asyncio.get_running_loop()
    next_cleanup = loop.time()
    leading: bool | None = None
    try:
        while True:
            try:
                now_leading = await lock.ensure()
                if now_leading != leading:
                    log.info("scheduler leadership", leading=now_leading)
                    leading = now_leading
                if not leading:
                    await asyncio.sleep(reconcile_every)
                    continue
                if broker is not None:
                    await reconcile(broker, engine, settings)
                if loop.time() >= next_cleanup:
                    await daily_cleanup(engine, settings)
                    next_cleanup = loop.time() + cleanup_every
            except Exception:  # keep scheduling through outages; each failure is logged
                log.exception("scheduler pass failed")
            await asyncio.sleep(reconcile_every)
    finally:
        await lock.release()
        await engine.dispose()


@click.command()
def scheduler() -> None:
    """Periodic work: re-send stuck jobs (every 10 s) and delete old finished jobs (daily)."""
    from core.logging import configure_logging

    settings = load_settings_or_exit()
    configure_logging(settings.log_format, settings.log_level)
    asyncio.run(run_scheduler(settings))
