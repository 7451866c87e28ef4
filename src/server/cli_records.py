"""``exams callbacks list`` (completion callback deliveries) and ``exams students erase`` (erasure)."""

from __future__ import annotations

import getpass
from typing import TYPE_CHECKING

import click

from server.cli_jobs import _with_database
from server.commands import load_settings_or_exit

if TYPE_CHECKING:
    from core.db import Database
    from jobs.results import Erasure

# The product's modules are imported inside the commands (see server.cli_jobs).

__all__ = ("callbacks", "students")


@click.group()
def callbacks() -> None:
    """Completion callbacks: deliveries and their outcomes."""


@callbacks.command("list")
@click.option("--failed", is_flag=True, help="Only deliveries given up, or pending after a failed attempt.")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10_000))
def list_callbacks(failed: bool, limit: int) -> None:
    """The newest callback deliveries (newest first)."""
    from jobs.callbacks import list_deliveries

    settings = load_settings_or_exit()

    async def work(database: Database) -> list[str]:
        async with database.transaction() as session:
            rows = await list_deliveries(session, failed=failed, limit=limit)
        lines = []
        for d in rows:
            status = str(d.last_status) if d.last_status is not None else "-"
            when = (d.next_attempt_at or d.delivered_at or d.gave_up_at or d.created_at).strftime("%Y-%m-%d %H:%M:%S")
            error = f"  {d.last_error}" if d.last_error and d.state != "delivered" else ""
            state = f"{d.event:<14} {d.state:<9} {d.attempts:>3}  {status:>4}"
            lines.append(f"{d.delivery_id}  {d.job_id}  {state}  {when}  {d.url}{error}")
        return lines

    lines = _with_database(settings, work)
    state = f"{'event':<14} {'state':<9} {'try':>3}  {'http':>4}"
    click.echo(f"{'delivery_id':<36}  {'job_id':<36}  {state}  {'when (UTC)':<19}  url")
    for line in lines:
        click.echo(line)
    if not lines:
        click.echo("(no deliveries)")


@click.group()
def students() -> None:
    """Students' data: erasure."""


def _operator() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (OSError, KeyError):
        return "cli:unknown"


@students.command("erase")
@click.argument("student_id")
def erase(student_id: str) -> None:
    """Delete every job, result and callback delivery of STUDENT_ID (audited, without the answers)."""
    from core.audit import record
    from jobs.results import erase_student

    if not student_id.strip() or not student_id.isprintable():
        raise click.BadParameter("a student id is printable text", param_hint="STUDENT_ID")
    settings = load_settings_or_exit()

    async def work(database: Database) -> Erasure:
        async with database.transaction() as session:
            erased = await erase_student(session, student_id)
            await record(
                session,
                actor=_operator(),
                action="students.erase",
                target={"student_id": student_id},
                count=erased.jobs + erased.results,
                detail={"jobs": erased.jobs, "results": erased.results, "callback_deliveries": erased.deliveries},
            )
        return erased

    erased = _with_database(settings, work)
    click.echo(
        f"erased student {student_id}: {erased.jobs} job(s), {erased.results} result(s), "
        f"{erased.deliveries} callback delivery(ies)"
    )
