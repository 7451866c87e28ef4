"""The operator's ``exams`` commands (migrate, catalog load, jobs list/show/retry/cleanup) on real SQLite.

Most commands run in process through Click's runner (a subprocess costs a second or more of
start-up each); ``migrate`` and ``catalog load`` also run as the real console script.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from click.testing import CliRunner, Result

from core.db import Database
from core.settings import load_settings
from jobs.models import ExamProcessingJob, utcnow
from server.cli import main
from server.migrate import run_migrations, schema_revisions
from support import SAMPLE_CATALOG, ExamsServer, FakeAIProcess, Process, run_exams, sqlite_url


def cli(args: list[str], env: dict[str, str], ok: bool = True) -> Result:
    """Run ``exams ARGS`` in process with ``env`` (settings are read afresh, as by a new process)."""
    result = CliRunner().invoke(main, args, env=env)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    if ok:
        assert result.exit_code == 0, f"exams {' '.join(args)}: {result.exit_code}\n{result.output}{result.stderr}"
    return result


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """Environment of the commands: a fresh SQLite database, migrated."""
    environ = {"DATABASE_URL": sqlite_url(tmp_path), "LOG_FORMAT": "json"}
    run_migrations(load_settings(environ, env_file=tmp_path / "absent.env"))
    return environ


@pytest.fixture
def add_job(env: dict[str, str], tmp_path: Path) -> Callable[..., UUID]:
    """Insert a job in the state a worker would have left it in; returns its job_id."""
    settings = load_settings(env, env_file=tmp_path / "absent.env")

    async def insert(fields: dict[str, Any]) -> UUID:
        database = Database.from_settings(settings)
        try:
            async with database.transaction() as session:
                job = ExamProcessingJob(exam_code="MATH-101", student_id="s-7", answers={"q1": "b", "q2": ["a"]})
                for name, value in fields.items():
                    setattr(job, name, value)
                session.add(job)
                await session.flush()
                return job.job_id
        finally:
            await database.dispose()

    def add(**fields: Any) -> UUID:
        return asyncio.run(insert(fields))

    return add


def failed_fields(step: str = "getting_ai_recommendations", progress: int = 37, days_ago: float = 0) -> dict[str, Any]:
    when = utcnow() - timedelta(days=days_ago)
    return {
        "status": "failed",
        "current_step": "failed",
        "failed_step": step,
        "progress": progress,
        "attempts": 3,
        "error_message": "Gave up after 3 attempts: AI request failed: HTTP 500 from AI API",
        "grading": {"score": 1},
        "completed_at": when,
        "failed_at": when,
    }


def completed_fields(days_ago: float = 0) -> dict[str, Any]:
    return {
        "status": "completed",
        "current_step": "completed",
        "progress": 100,
        "attempts": 1,
        "result": {"score": 7},
        "completed_at": utcnow() - timedelta(days=days_ago),
    }


def show(env: dict[str, str], job_id: UUID | str) -> dict[str, Any]:
    return dict(json.loads(cli(["jobs", "show", str(job_id)], env).stdout))


def exam_titles(env: dict[str, str]) -> dict[str, dict[str, str]]:
    with sqlite3.connect(env["DATABASE_URL"].split(":///", 1)[1]) as db:
        return {code: json.loads(title) for code, title in db.execute("SELECT code, title FROM exams")}


# --- migrate, catalog load --------------------------------------------------------------------


def test_migrate_creates_the_schema_and_is_repeatable(tmp_path: Path) -> None:
    env = {"DATABASE_URL": sqlite_url(tmp_path)}
    for _ in range(2):
        done = run_exams(["migrate"], env)
        assert "latest schema" in done.stdout
    with sqlite3.connect(env["DATABASE_URL"].split(":///", 1)[1]) as db:
        tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        version = db.execute("SELECT version_num FROM alembic_version").fetchall()
    assert {"exams", "exam_processing_jobs", "alembic_version"} <= tables
    assert len(version) == 1


def test_catalog_load_and_replace(env: dict[str, str], tmp_path: Path) -> None:
    first = run_exams(["catalog", "load", str(SAMPLE_CATALOG)], env)
    codes = [exam["code"] for exam in json.loads(SAMPLE_CATALOG.read_text())]
    assert f"{len(codes)} new, 0 replaced" in first.stdout
    assert set(exam_titles(env)) == set(codes)

    math = next(e for e in json.loads(SAMPLE_CATALOG.read_text()) if e["code"] == "MATH-101")
    changed = tmp_path / "math.json"
    changed.write_text(json.dumps({**math, "title": {"en": "Algebra, revised", "ar": "الجبر"}}))  # one object
    second = cli(["catalog", "load", str(changed)], env)
    assert "0 new, 1 replaced" in second.stdout
    titles = exam_titles(env)
    assert titles["MATH-101"]["en"] == "Algebra, revised"
    assert len(titles) == len(codes)  # replaced, not duplicated


@pytest.mark.parametrize(
    ("content", "named"),
    [
        ("{not json", "JSON"),
        ("[]", "no exams"),
        (None, "answer"),  # a question without its answer
    ],
)
def test_catalog_load_of_a_bad_file_says_what_is_wrong(
    env: dict[str, str], tmp_path: Path, content: str | None, named: str
) -> None:
    bad = tmp_path / "bad.json"
    if content is None:
        math = next(e for e in json.loads(SAMPLE_CATALOG.read_text()) if e["code"] == "MATH-101")
        del math["questions"][0]["answer"]
        content = json.dumps(math)
    bad.write_text(content)
    done = cli(["catalog", "load", str(bad)], env, ok=False)
    assert done.exit_code != 0
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "bad.json" in lines[0]
    assert named in lines[0]
    if named == "answer":
        assert "MATH-101" in lines[0]
        assert "q1" in lines[0]
    assert exam_titles(env) == {}  # nothing half-loaded


def test_catalog_load_of_a_missing_file_fails(env: dict[str, str], tmp_path: Path) -> None:
    done = cli(["catalog", "load", str(tmp_path / "nope.json")], env, ok=False)
    assert done.exit_code != 0
    assert "nope.json" in done.stderr
    assert "Traceback" not in done.stderr


# --- jobs list, show --------------------------------------------------------------------------


def test_jobs_list(env: dict[str, str], add_job: Callable[..., UUID]) -> None:
    empty = cli(["jobs", "list"], env)
    assert "(no jobs)" in empty.stdout
    failed = add_job(**failed_fields())
    done = add_job(**completed_fields())
    pending = add_job()
    listing = cli(["jobs", "list"], env).stdout
    for job_id in (failed, done, pending):
        assert str(job_id) in listing
    assert listing.index(str(pending)) < listing.index(str(failed))  # newest first
    only_failed = cli(["jobs", "list", "--status", "failed"], env).stdout
    assert str(failed) in only_failed
    assert str(done) not in only_failed
    assert str(pending) not in only_failed


def test_jobs_list_shows_ten_by_default(env: dict[str, str], add_job: Callable[..., UUID]) -> None:
    ids = [add_job() for _ in range(12)]
    listing = cli(["jobs", "list"], env).stdout
    assert sum(str(job_id) in listing for job_id in ids) == 10
    assert str(ids[-1]) in listing
    assert str(ids[0]) not in listing


def test_jobs_show(env: dict[str, str], add_job: Callable[..., UUID]) -> None:
    job_id = add_job(**failed_fields())
    data = show(env, job_id)
    assert data["job_id"] == str(job_id)
    assert (data["status"], data["current_step"], data["failed_step"], data["progress"]) == (
        "failed",
        "failed",
        "getting_ai_recommendations",
        37,
    )
    assert "HTTP 500" in data["error_message"]
    assert "answers" not in data  # the submitted answers are left out


def test_jobs_show_of_an_unknown_or_malformed_id(env: dict[str, str]) -> None:
    unknown = cli(["jobs", "show", "00000000-0000-0000-0000-000000000001"], env, ok=False)
    assert unknown.exit_code != 0
    assert "00000000-0000-0000-0000-000000000001" in unknown.stderr
    assert "Traceback" not in unknown.stderr
    malformed = cli(["jobs", "show", "not-a-uuid"], env, ok=False)
    assert malformed.exit_code != 0
    assert "not-a-uuid" in malformed.stderr
    assert "Traceback" not in malformed.stderr


# --- jobs retry -------------------------------------------------------------------------------


def test_jobs_retry_sends_a_failed_job_back_to_its_failed_step(
    env: dict[str, str], add_job: Callable[..., UUID]
) -> None:
    job_id = add_job(**failed_fields("getting_ai_recommendations", 37))
    done = cli(["jobs", "retry", str(job_id)], env)
    assert "1 job(s)" in done.stdout
    data = show(env, job_id)
    assert (data["status"], data["current_step"], data["progress"]) == ("pending", "getting_ai_recommendations", 37)
    assert data["error_message"] is None
    assert data["completed_at"] is None
    assert data["grading"] == {"score": 1}  # kept: the retry does not grade again


def test_jobs_retry_refuses_a_job_that_did_not_fail(env: dict[str, str], add_job: Callable[..., UUID]) -> None:
    job_id = add_job(**completed_fields())
    done = cli(["jobs", "retry", str(job_id)], env, ok=False)
    assert done.exit_code != 0
    assert "completed" in done.stderr
    assert show(env, job_id)["status"] == "completed"
    unknown = cli(["jobs", "retry", "00000000-0000-0000-0000-000000000002"], env, ok=False)
    assert unknown.exit_code != 0
    assert "Traceback" not in unknown.stderr
    neither = cli(["jobs", "retry"], env, ok=False)
    assert neither.exit_code != 0


def test_jobs_retry_all_failed(env: dict[str, str], add_job: Callable[..., UUID]) -> None:
    failed = [
        add_job(**failed_fields("getting_ai_recommendations", 40)),
        add_job(**failed_fields("validating_exam", 0)),
    ]
    done_id = add_job(**completed_fields())
    done = cli(["jobs", "retry", "--failed"], env)
    assert "2 job(s)" in done.stdout
    assert show(env, failed[0])["current_step"] == "getting_ai_recommendations"
    assert show(env, failed[1])["current_step"] == "validating_exam"
    assert all(show(env, j)["status"] == "pending" for j in failed)
    assert show(env, done_id)["status"] == "completed"
    assert "failed" not in cli(["jobs", "list", "--status", "failed"], env).stdout.split("\n", 1)[1]


# --- jobs cleanup -----------------------------------------------------------------------------


def test_jobs_cleanup(env: dict[str, str], add_job: Callable[..., UUID]) -> None:
    old = [add_job(**completed_fields(days_ago=10)), add_job(**failed_fields(days_ago=9))]
    recent = add_job(**completed_fields(days_ago=1))
    pending = add_job()

    dry = cli(["jobs", "cleanup", "--dry-run"], env)  # default: JOB_RETENTION_DAYS=7
    assert "would delete 2 job(s)" in dry.stdout
    everything = cli(["jobs", "cleanup", "--older-than-days", "0", "--dry-run"], env)
    assert "would delete 3 job(s)" in everything.stdout
    assert str(recent) in cli(["jobs", "list"], env).stdout  # a dry run deletes nothing

    real = cli(["jobs", "cleanup", "--older-than-days", "0"], env)
    assert "deleted 3 job(s)" in real.stdout
    listing = cli(["jobs", "list"], env).stdout
    assert str(pending) in listing
    for job_id in (*old, recent):
        assert str(job_id) not in listing
    bad = cli(["jobs", "cleanup", "--older-than-days", "-1"], env, ok=False)
    assert bad.exit_code != 0


# --- an operator's retry picked up by a running server ------------------------------------------


def test_a_retried_job_is_completed_by_the_running_server(
    make_server: Callable[..., ExamsServer], fake_ai_http: FakeAIProcess
) -> None:
    server = make_server(JOB_MAX_RETRIES="0")
    fake_ai_http.set_mode("error_500")
    response = server.submit()
    assert response.status_code == 202
    job_id = response.json()["job_id"]
    failed, _ = server.wait_final(job_id)
    assert failed["status"] == "failed", failed
    assert fake_ai_http.requests() == 1

    fake_ai_http.set_mode("ok")
    cli(["jobs", "retry", job_id], server.env)
    assert server.status(job_id)["current_step"] == "getting_ai_recommendations"
    final, seen = server.wait_final(job_id, timeout=60)  # the reconciler sends it within ~10 s
    assert final["status"] == "completed", final
    assert final["attempts"] == 2
    assert fake_ai_http.requests() == 2
    assert all(doc["progress"] >= failed["progress"] for doc in seen)


def test_serve_refuses_an_unmigrated_postgresql_database(pg_url: str) -> None:
    env = {"DATABASE_URL": pg_url, "SECRET_KEY": "k" * 32, "ADMIN_PASSWORD": "pw", "AI_API_ENABLED": "false"}
    result = run_exams(["serve", "--port", "1"], env, check=False)
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    head = schema_revisions(load_settings({"DATABASE_URL": pg_url}, env_file=Path("absent.env")))[1]
    assert lines == [f"exams: the database schema is at nothing, not {head}: run `exams migrate`"], result.stderr


def test_scheduler_in_embedded_mode_runs_the_daily_cleanup(
    env: dict[str, str], add_job: Callable[..., UUID], tmp_path: Path
) -> None:
    old = add_job(**completed_fields(days_ago=10))
    recent = add_job(**completed_fields(days_ago=1))
    proc = Process(["scheduler"], env, tmp_path / "scheduler.log", None).start(wait=False)
    try:
        deadline = time.monotonic() + 30
        while "cleanup finished" not in proc.log() and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        proc.stop()
    log = proc.log()
    assert "cleanup only" in log, log
    assert '"deleted": 1' in log, log
    listing = cli(["jobs", "list"], env).stdout
    assert str(old) not in listing
    assert str(recent) in listing
