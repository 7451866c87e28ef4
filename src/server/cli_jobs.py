"""``exams jobs …`` (list, show, retry, cleanup) and ``exams scheduler`` (reconciler and daily cleanup)."""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar
from uuid import UUID

import click
import msgspec

from server.commands import load_settings_or_exit, run_async

if TYPE_CHECKING:
    from core.db import Database
    from core.settings import Settings
    from jobs.models import ExamProcessingJob

# The product's modules are imported inside the commands: `exams` must set up the environment
# (PROMETHEUS_MULTIPROC_DIR) before prometheus-client is first imported.

__all__ = ("jobs", "scheduler")

T = TypeVar("T")


def _job_id(raw: str) -> UUID:
    try:
        return UUID(raw)
    except ValueError:
        raise click.BadParameter(f"{raw!r} is not a job id (a UUID)") from None


def _row(job: ExamProcessingJob) -> str:
    created = job.created_at.strftime("%Y-%m-%d %H:%M:%S")
    return f"{job.job_id}  {job.exam_code:<12} {job.status:<10} {job.progress:>3}%  {job.current_step:<27} {created}"


def _with_database(settings: Settings, work: Callable[[Database], Awaitable[T]]) -> T:
    """Run ``work`` with a database built for this command, disposed afterwards."""
    from server.wiring import Wiring

    async def go() -> T:
        database = Wiring(settings).database()
        try:
            return await work(database)
        finally:
            await database.dispose()

    return run_async(go)


@click.group()
def jobs() -> None:
    """Inspect and operate exam-processing jobs."""


@jobs.command("list")
@click.option("--status", type=click.Choice(["pending", "processing", "completed", "failed"]))
@click.option("--limit", default=10, show_default=True, type=click.IntRange(1, 1000))
def list_jobs(status: str | None, limit: int) -> None:
    """The most recent jobs (newest first)."""
    from jobs.services import JobService

    settings = load_settings_or_exit()

    async def work(database: Database) -> list[str]:
        async with database.transaction() as session:
            return [_row(j) for j in await JobService(session=session).list_recent(status, limit)]

    rows = _with_database(settings, work)
    click.echo(f"{'job_id':<36}  {'exam_code':<12} {'status':<10} {'prog':>4}  {'current_step':<27} created_at")
    for line in rows:
        click.echo(line)
    if not rows:
        click.echo("(no jobs)")


@jobs.command("show")
@click.argument("job_id")
def show_job(job_id: str) -> None:
    """Everything about one job, as JSON (the submitted answers are left out)."""
    from jobs.services import JobService

    settings = load_settings_or_exit()
    uid = _job_id(job_id)

    async def work(database: Database) -> dict[str, object] | None:
        async with database.transaction() as session:
            job = await JobService(session=session).get_by_job_id(uid)
            if job is None:
                return None
            data = job.to_dict(exclude={"answers", "request_fingerprint", "version"})
            data["answered_questions"] = len(job.answers)
            return data

    data = _with_database(settings, work)
    if data is None:
        click.echo(f"exams: no job {job_id}", err=True)
        sys.exit(1)
    click.echo(msgspec.json.format(msgspec.json.encode(data), indent=2).decode())


@jobs.command("retry")
@click.argument("job_id", required=False)
@click.option("--failed", "all_failed", is_flag=True, help="Retry every failed job.")
def retry_jobs(job_id: str | None, all_failed: bool) -> None:
    """Re-run a failed job (or every failed job); each resumes at the step that failed."""
    from jobs.dispatch import JobRef, dispatch
    from jobs.models import InvalidTransitionError
    from jobs.services import JobService
    from server.wiring import Wiring

    if bool(job_id) == all_failed:
        raise click.UsageError("give either a JOB_ID or --failed")
    settings = load_settings_or_exit()

    async def work(database: Database) -> tuple[list[UUID], list[str]]:
        problems: list[str] = []
        async with database.transaction() as session:
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
            broker, _actor = Wiring(settings).broker(worker=False)
            await dispatch(broker, database, retried)
        return [ref.job_id for ref in retried], problems

    retried, problems = _with_database(settings, work)
    for line in problems:
        click.echo(f"exams: {line}", err=True)
    where = "queued" if settings.queue_connection != "embedded" else "pending (the running server picks them up)"
    click.echo(f"{len(retried)} job(s) {where}")
    if problems and not retried:
        sys.exit(1)


@jobs.command("cleanup")
@click.option("--older-than-days", type=click.IntRange(0, None), help="Default: JOB_RETENTION_DAYS.")
@click.option("--dry-run", is_flag=True, help="Only count what would be deleted.")
def cleanup(older_than_days: int | None, dry_run: bool) -> None:
    """Delete completed and failed jobs that finished more than N days ago."""
    from jobs.maintenance import cleanup_finished

    settings = load_settings_or_exit()
    days = settings.job_retention_days if older_than_days is None else older_than_days
    count = _with_database(settings, lambda database: cleanup_finished(database, days, dry_run=dry_run))
    verb = "would delete" if dry_run else "deleted"
    click.echo(f"{verb} {count} job(s) finished more than {days} day(s) ago")


@click.command()
def scheduler() -> None:
    """Periodic work: re-send stuck jobs (every 10 s) and delete old finished jobs (daily)."""
    import structlog

    from core.logging import configure_logging
    from jobs.leader import LeaderLock
    from jobs.maintenance import run_scheduler
    from server.wiring import Wiring

    settings = load_settings_or_exit()
    configure_logging(settings.log_format, settings.log_level)
    log = structlog.get_logger("server.scheduler")
    wiring = Wiring(settings)
    # Embedded: the in-memory queue lives in `exams serve`, which reconciles itself; a separate
    # scheduler process can only do the cleanup.
    broker = wiring.broker(worker=False)[0] if settings.queue_connection != "embedded" else None
    if broker is None:
        log.info("scheduler in embedded mode: cleanup only (exams serve re-sends stuck jobs itself)")

    _with_database(
        settings, lambda database: run_scheduler(database, broker, settings, lock=LeaderLock(database.engine))
    )
