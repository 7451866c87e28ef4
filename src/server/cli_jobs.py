"""``exams jobs …`` (list, show, retry, requeue, cleanup) and ``exams scheduler`` (reconciler and daily cleanup)."""

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
@click.option("--status", type=click.Choice(["pending", "processing", "completed", "failed", "cancelled"]))
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
    """Re-run a failed or cancelled job (or every failed job); each resumes at the step it stopped in (audited)."""
    import getpass

    from core.audit import record
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
            await record(
                session,
                actor=f"cli:{getpass.getuser()}",
                action="jobs.retry",
                target={"job_ids": [str(i) for i in ids]} if job_id else {"filter": {"status": "failed"}},
                count=len(retried),
                detail={"job_ids": [str(ref.job_id) for ref in retried[:1000]], "problems": len(problems)},
            )
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


@jobs.command("cancel")
@click.argument("job_id")
def cancel(job_id: str) -> None:
    """Cancel a pending or processing job (a running one stops within 2 s)."""
    from core.errors import AlreadyFinishedError
    from jobs.cancel import Cancellation, cancel_job
    from jobs.dispatch import send_callbacks
    from server.wiring import Wiring

    settings = load_settings_or_exit()
    uid = _job_id(job_id)

    async def work(database: Database) -> Cancellation | str | None:
        try:
            cancellation = await cancel_job(database, uid)
        except AlreadyFinishedError as exc:
            return str(exc.params.get("status"))
        if (
            cancellation is not None
            and cancellation.delivery_id is not None
            and settings.queue_connection != "embedded"
        ):
            # Embedded: the running server's scheduler sends the callback (the row is its outbox).
            broker, _actor = Wiring(settings).broker(worker=False)
            await send_callbacks(broker, [cancellation.delivery_id])
        return cancellation

    outcome = _with_database(settings, work)
    if outcome is None:
        click.echo(f"exams: no job {job_id}", err=True)
        sys.exit(1)
    if isinstance(outcome, str):
        click.echo(f"exams: job {job_id} already finished ({outcome}); it cannot be cancelled", err=True)
        sys.exit(1)
    click.echo(f"job {job_id} {'cancelled' if outcome.changed else 'was already cancelled'}")


@jobs.command("requeue")
@click.option(
    "--pending-older-than",
    type=click.FloatRange(0, None),
    metavar="S",
    help="Re-send pending jobs submitted more than S seconds ago.",
)
@click.option("--stalled", is_flag=True, help="Re-send processing jobs whose heartbeat is older than JOB_STALE_AFTER.")
def requeue(pending_older_than: float | None, stalled: bool) -> None:
    """Re-send jobs whose queue message was lost (paced at ADMIN_RETRY_RATE; audited)."""
    import asyncio
    import getpass

    from admin.operations import resend_job
    from core.audit import record
    from jobs.admin_queries import lost_job_ids
    from jobs.services import JobService
    from server.wiring import Wiring

    if pending_older_than is None and not stalled:
        raise click.UsageError("give --pending-older-than S, --stalled, or both")
    settings = load_settings_or_exit()
    embedded = settings.queue_connection == "embedded"

    async def work(database: Database) -> tuple[int, int, int]:
        async with database.transaction() as session:
            pending, stale = await lost_job_ids(
                session,
                pending_older_than=pending_older_than,
                stalled_after=settings.job_stale_after if stalled else None,
            )
            await record(
                session,
                actor=f"cli:{getpass.getuser()}",
                action="jobs.requeue",
                target={"pending_older_than": pending_older_than, "stalled": stalled},
                count=len(pending) + len(stale),
                detail={"job_ids": [str(j) for j in [*pending, *stale][:1000]], "embedded": embedded},
            )
            if embedded:
                # The in-memory queue lives in `exams serve`: mark the jobs unsent and free the
                # stalled ones; the server's reconciler sends them within seconds.
                service = JobService(session=session)
                await service.mark_unsent(pending)
                freed = 0
                for job_id in stale:
                    job = await service.get_by_job_id(job_id)
                    if job is not None and await service.release_stalled(job_id, job.version):
                        job.enqueued_at = None
                        freed += 1
                return len(pending), freed, len(pending) + len(stale)
        broker, _actor = Wiring(settings).broker(worker=False)
        sent_pending = sent_stalled = 0
        interval = 1.0 / settings.admin_retry_rate
        for job_id in pending:
            sent_pending += await resend_job(database, broker, job_id, stalled=False)
            await asyncio.sleep(interval)
        for job_id in stale:
            sent_stalled += await resend_job(database, broker, job_id, stalled=True)
            await asyncio.sleep(interval)
        return sent_pending, sent_stalled, len(pending) + len(stale)

    pending_sent, stalled_sent, found = _with_database(settings, work)
    where = "marked for the running server to send" if embedded else "sent again"
    click.echo(f"{pending_sent} pending and {stalled_sent} stalled job(s) {where} (of {found} found)")


@jobs.command("cleanup")
@click.option("--older-than-days", type=click.IntRange(0, None), help="Default: JOB_RETENTION_DAYS.")
@click.option("--dry-run", is_flag=True, help="Only count what would be deleted.")
def cleanup(older_than_days: int | None, dry_run: bool) -> None:
    """Delete completed, failed and cancelled jobs that finished more than N days ago (audited)."""
    import getpass
    import time
    from datetime import timedelta

    from core.audit import record
    from jobs.maintenance import cleanup_finished
    from jobs.models import utcnow

    settings = load_settings_or_exit()
    days = settings.job_retention_days if older_than_days is None else older_than_days

    async def work(database: Database) -> int:
        started, clock = utcnow(), time.monotonic()
        deleted = await cleanup_finished(database, days, dry_run=dry_run)
        if dry_run:
            return deleted
        # The same entry as the scheduler's and the dashboard's runs (the cleanup page and the
        # exams_cleanup_* metrics read it).
        async with database.transaction() as session:
            await record(
                session,
                actor=f"cli:{getpass.getuser()}",
                action="cleanup.run",
                target={"finished_before": (started - timedelta(days=days)).isoformat(), "retention_days": days},
                count=deleted,
                detail={"trigger": "cli", "seconds": round(time.monotonic() - clock, 3), "complete": True},
            )
        return deleted

    count = _with_database(settings, work)
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
