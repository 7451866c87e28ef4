"""The ``exams`` command: run the product (demo, serve, worker, scheduler) and operate it."""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path
from typing import Any

import click
from sqlalchemy.exc import SQLAlchemyError

from core.logging import configure_logging
from core.settings import Settings, SettingsError, load_settings, redact_url
from exams.catalog import SAMPLE_CATALOG_PATH as SAMPLE_CATALOG
from server.cli_jobs import jobs, scheduler
from server.cli_records import callbacks, students
from server.cli_tokens import tokens
from server.commands import check_production_or_exit as _check_production
from server.commands import load_settings_or_exit as _settings
from server.commands import one_line as _one_line
from server.commands import run_async as _run

__all__ = ("main",)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Async Exam Processing: grade exam submissions with AI study recommendations."""
    _prepare_metrics_dir()
    try:
        settings = load_settings()
    except SettingsError:
        return  # the command itself reports the bad setting
    # Every command logs as the settings say (JSON lines on stderr by default), never on stdout.
    configure_logging(settings.log_format, settings.log_level)


def _prepare_metrics_dir() -> None:
    # prometheus-client switches to multiprocess mode when the variable merely exists, and an
    # empty value would scatter its files into the working directory: treat empty as unset.
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory is None:
        try:  # the setting may come from .env; prometheus-client only reads the environment
            directory = load_settings().prometheus_multiproc_dir or None
        except SettingsError:
            return  # the command itself reports the bad setting
        if directory is None:
            return
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
    if not directory.strip():
        del os.environ["PROMETHEUS_MULTIPROC_DIR"]
        return
    try:
        Path(directory).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        click.echo(f"exams: bad setting: PROMETHEUS_MULTIPROC_DIR {directory!r} cannot be created: {exc}", err=True)
        sys.exit(2)


@main.command()
@click.option(
    "--to",
    "revision",
    metavar="REVISION",
    help="Move the schema to this revision instead of the latest, running downgrades if the "
    "database is ahead (rolling a release back; docs/deployment.md).",
)
@click.option("--current", is_flag=True, help="Print the database's revision and the code's latest; change nothing.")
def migrate(revision: str | None, current: bool) -> None:
    """Upgrade the database to the latest schema (or move it to --to REVISION)."""
    from alembic.util.exc import CommandError

    from server.migrate import migrate_to, run_migrations, schema_revisions

    settings = _settings()
    try:
        if current:
            found, head = schema_revisions(settings)
            click.echo(f"database schema: {found or 'empty'}; latest: {head}")
        elif revision is not None:
            before, after = migrate_to(settings, revision)
            if before == after:
                click.echo(f"database schema is already at {after or 'empty'}")
            else:
                click.echo(f"database schema moved from {before or 'empty'} to {after or 'empty'}")
        else:
            run_migrations(settings)
            click.echo("database is at the latest schema")
    except CommandError as exc:
        click.echo(f"exams: cannot migrate to {revision}: {_one_line(exc)}", err=True)
        sys.exit(2)
    except (OSError, SQLAlchemyError) as exc:
        click.echo(f"exams: cannot migrate the database: {_one_line(exc)}", err=True)
        sys.exit(1)


async def _load_catalog(settings: Settings, path: Path) -> tuple[int, int]:
    from exams.catalog import load_catalog_file
    from exams.services import ExamService
    from server.wiring import Wiring

    definitions = load_catalog_file(path)
    database = Wiring(settings).database()
    try:
        async with database.transaction() as session:
            return await ExamService(session=session).load(definitions)
    finally:
        await database.dispose()


@main.group()
def catalog() -> None:
    """The exam catalog."""


@catalog.command("load")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def catalog_load(file: Path) -> None:
    """Load exams from a JSON FILE (one exam or a list); an existing code is replaced."""
    from exams.catalog import CatalogError

    settings = _settings()
    try:
        created, replaced = _run(lambda: _load_catalog(settings, file))
    except CatalogError as exc:
        click.echo(f"exams: {file}: {exc}", err=True)
        sys.exit(1)
    except (OSError, SQLAlchemyError) as exc:
        click.echo(f"exams: cannot reach the database: {_one_line(exc)}", err=True)
        sys.exit(1)
    click.echo(f"loaded {created + replaced} exam(s): {created} new, {replaced} replaced")


def _ensure_schema(settings: Settings) -> None:
    """SQLite (one host): migrate now. PostgreSQL: refuse to start on an old schema.

    A database that cannot be reached does not stop the web app: it starts, answers 503 (and
    ``/ready`` says the database is down) until the database is back.
    """
    from core.retry import is_connection_problem
    from server.migrate import run_migrations, schema_revisions

    try:
        if settings.is_sqlite:
            run_migrations(settings)
            return
        current, head = schema_revisions(settings)
    except Exception as exc:
        # (asyncpg's "the database system is starting up" comes unwrapped: core.retry knows it.)
        if not (isinstance(exc, OSError | SQLAlchemyError) or is_connection_problem(exc)):
            raise
        click.echo(f"exams: warning: database unreachable, starting anyway: {_one_line(exc)}", err=True)
        return
    if current != head:
        found = current or "nothing"
        click.echo(f"exams: the database schema is at {found}, not {head}: run `exams migrate`", err=True)
        sys.exit(1)


#: Seconds a stopping web process waits for open requests. Ordinary requests take milliseconds;
#: event streams last until their job ends, so they are cut after this and their clients
#: reconnect (``Last-Event-ID``) to a process that is up, rather than holding a restart back.
GRACEFUL_SHUTDOWN_SECONDS = 5


def _serve(settings: Settings, host: str, port: int, workers: int = 1) -> None:
    import uvicorn

    from server.app import create_app

    if workers > 1:
        # Each process builds its own app from the same environment.
        uvicorn.run(
            "server.app:create_app",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
        )
        return
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
    )
    uvicorn.Server(config).run()


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option(
    "--workers",
    default=1,
    show_default=True,
    type=click.IntRange(1, 64),
    help="Web processes (redis or rabbitmq only; set PROMETHEUS_MULTIPROC_DIR so /metrics covers them all).",
)
def serve(host: str, port: int, workers: int) -> None:
    """Run the web app (and the embedded worker when QUEUE_CONNECTION=embedded)."""
    settings = _settings()
    _check_production(settings, web=True)
    if workers > 1 and settings.queue_connection == "embedded":
        click.echo(
            "exams: bad setting: --workers needs QUEUE_CONNECTION=redis or rabbitmq (one embedded worker)", err=True
        )
        sys.exit(2)
    _ensure_schema(settings)
    _serve(settings, host, port, workers)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--ai-latency", default=3.0, show_default=True, type=float, help="Seconds the fake AI takes.")
def demo(host: str, port: int, ai_latency: float) -> None:
    """One process: migrations, sample catalog, fake AI, API, student page and embedded worker."""
    from server.migrate import run_migrations

    settings = _settings()
    changes: dict[str, Any] = {"fake_ai_latency": ai_latency}
    if "LOG_FORMAT" not in os.environ:
        changes["log_format"] = "console"
    if not settings.secret_key:
        changes["secret_key"] = secrets.token_urlsafe(32)
    password = settings.admin_password or secrets.token_urlsafe(12)
    changes["admin_password"] = password
    settings = settings.with_overrides(**changes)
    run_migrations(settings)
    _run(lambda: _load_catalog(settings, SAMPLE_CATALOG))
    base = f"http://{host}:{port}"
    ai = settings.ai_api_base_url or f"built-in fake AI ({ai_latency:g} s latency)"
    click.echo(
        "\n".join(
            [
                "",
                "Async Exam Processing demo",
                f"  Student page   {base}/",
                f"  API docs       {base}/api/documentation",
                f"  Exams          {base}/api/exams",
                f"  Metrics        {base}/metrics",
                f"  Dashboard      {base}/admin",
                f"  Admin login    {settings.admin_username} / {password}",
                f"  Database       {redact_url(settings.database_url)}",
                f"  AI             {ai}",
                "",
            ]
        )
    )
    _serve(settings, host, port)


@main.command()
@click.option("--processes", default=2, show_default=True, type=int, help="Worker processes.")
@click.option("--threads", default=16, show_default=True, type=int, help="Jobs in flight per process.")
def worker(processes: int, threads: int) -> None:
    """Run Dramatiq worker processes for QUEUE_CONNECTION=redis or rabbitmq."""
    settings = _settings()
    if settings.queue_connection == "embedded":
        click.echo("exams: bad setting: QUEUE_CONNECTION=embedded runs its worker inside `exams serve`", err=True)
        sys.exit(2)
    _check_production(settings, web=False)
    # Each thread holds one job; prefetching more would park messages behind busy threads.
    os.environ.setdefault("dramatiq_queue_prefetch", str(threads))
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # Dramatiq's exporter (a process forked by its master) reads this, not our settings.
        os.environ.setdefault("dramatiq_prom_db", os.environ["PROMETHEUS_MULTIPROC_DIR"])
    shutdown_ms = int((settings.job_time_limit + 30) * 1000)
    args = [
        sys.executable,
        "-m",
        "server.worker_cli",
        "server.worker_main",
        "--skip-logging",
        "--processes",
        str(processes),
        "--threads",
        str(threads),
        "--queues",
        "exams",
        "exams_callbacks",
        "--worker-shutdown-timeout",
        str(shutdown_ms),
    ]
    os.execv(sys.executable, args)  # noqa: S606  (replace this process: signals reach Dramatiq directly)


@main.command("fake-ai")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8001, show_default=True, type=int)
@click.option("--latency", default=35.0, show_default=True, type=float, help="Seconds before each answer.")
@click.option("--error-rate", default=0.0, show_default=True, type=float, help="Fraction answered with 500.")
@click.option("--jitter", default=0.0, show_default=True, type=float, help="Random extra seconds, 0 to this.")
@click.option(
    "--mode",
    default="ok",
    show_default=True,
    type=click.Choice(["ok", "error_500", "rate_limit_429", "hang", "invalid_json", "bad_shape"]),
)
def fake_ai(*, host: str, port: int, latency: float, error_rate: float, jitter: float, mode: str) -> None:
    """Run an OpenAI-compatible stand-in AI server (for demos, tests and benchmarks)."""
    if not 0 <= error_rate <= 1:
        click.echo("exams: --error-rate must be between 0 and 1", err=True)
        sys.exit(2)
    configure_logging(os.environ.get("LOG_FORMAT", "console"))
    from ai_client import run_fake_ai

    run_fake_ai(host=host, port=port, latency=latency, error_rate=error_rate, mode=mode, jitter=jitter)


@main.group()
def admin() -> None:
    """Dashboard users."""


@admin.command("create-user")
@click.argument("name")
@click.option("--role", required=True, type=click.Choice(["viewer", "operator"]), help="viewer reads; operator acts.")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input (one line).")
def admin_create_user(name: str, role: str, password_stdin: bool) -> None:
    """Add a dashboard user NAME (the password is asked, or read with --password-stdin)."""
    import getpass

    from admin.auth import UserExistsError, create_user
    from core.audit import record
    from server.wiring import Wiring

    settings = _settings()
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)

    async def work() -> None:
        database = Wiring(settings).database()
        try:
            async with database.transaction() as session:
                user = await create_user(session, settings, name, role, password)
                await record(
                    session,
                    actor=f"cli:{getpass.getuser()}",
                    action="users.create",
                    target={"username": user.username},
                    detail={"role": role},
                )
        finally:
            await database.dispose()

    try:
        _run(work)
    except UserExistsError as exc:
        click.echo(f"exams: {exc}", err=True)
        sys.exit(1)
    except ValueError as exc:
        click.echo(f"exams: {exc}", err=True)
        sys.exit(2)
    except (OSError, SQLAlchemyError) as exc:
        click.echo(f"exams: cannot reach the database: {_one_line(exc)}", err=True)
        sys.exit(1)
    click.echo(f"dashboard user {name.strip().lower()!r} created ({role})")


main.add_command(jobs)
main.add_command(scheduler)
main.add_command(callbacks)
main.add_command(students)
main.add_command(tokens)
