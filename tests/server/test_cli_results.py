"""``exams jobs cancel``, ``exams callbacks list [--failed]`` and ``exams students erase`` on real SQLite.

In process through Click's runner, as ``tests/core/test_cli.py`` runs the other commands: each
invocation reads its settings afresh from the environment given, like a new process would.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol, TypeVar
from uuid import UUID, uuid4

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from core.audit import AuditEntry
from core.settings import Settings, load_settings
from jobs.models import CallbackDelivery, ExamProcessingJob, ExamResult, ExamResultTopic, utcnow
from jobs.results import write_result
from server.cli import main
from server.migrate import run_migrations
from support import NO_ENV_FILE, run_in_transaction, sqlite_url

T = TypeVar("T")

ANSWERS = {"q1": "b", "q2": ["a", "c"], "q3": 3.14, "q4": True, "q5": "photosynthesis"}
#: Answer values no audit entry may contain (the erasure is audited without the answers).
SECRET_ANSWER = "photosynthesis-SECRET-7f3a"
RESULT = {
    "score": 6,
    "max_score": 8,
    "percentage": 75.0,
    "passed": True,
    "topics": [
        {"topic": "algebra", "score": 3, "max_score": 5, "percentage": 60.0},
        {"topic": "geometry", "score": 2, "max_score": 2, "percentage": 100.0},
        {"topic": "biology", "score": 1, "max_score": 1, "percentage": 100.0},
    ],
    "questions": [{"question_id": "q1", "correct": True, "awarded": 1, "max": 1}],
    "recommendations": [{"topic": "algebra", "priority": "high", "text": "Practise linear equations."}],
    "recommendations_source": "ai",
    "processed_at": "2026-11-29T08:00:00Z",
}


def cli(env: dict[str, str], *args: str, code: int = 0) -> Result:
    """``exams ARGS`` in process; asserts the exit code."""
    result = CliRunner().invoke(main, list(args), env=env)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code == code, f"exams {' '.join(args)}: {result.exit_code}\n{result.stdout}{result.stderr}"
    return result


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """A fresh SQLite database, migrated; the commands run where no ``.env`` file is."""
    monkeypatch.chdir(tmp_path)
    environ = {"DATABASE_URL": sqlite_url(tmp_path), "LOG_FORMAT": "json", "QUEUE_CONNECTION": "embedded"}
    run_migrations(load_settings(environ, env_file=NO_ENV_FILE))
    return environ


class Db(Protocol):
    """Runs ``work(session)`` in one committed transaction and returns what it returns."""

    def __call__(self, work: Callable[[AsyncSession], Awaitable[T]], /) -> T: ...


@pytest.fixture
def db(env: dict[str, str]) -> Db:
    """Run ``work(session)`` in one committed transaction on the test's database."""
    settings: Settings = load_settings(env, env_file=NO_ENV_FILE)

    def run(work: Callable[[AsyncSession], Awaitable[T]]) -> T:
        return run_in_transaction(settings, work)

    return run


def add_job(db: Db, **fields: Any) -> UUID:
    """A job as a worker would have left it; with ``status="completed"`` also its result row."""

    async def work(session: AsyncSession) -> UUID:
        job = ExamProcessingJob(exam_code="MATH-101", student_id="s-7", answers=dict(ANSWERS))
        for name, value in fields.items():
            setattr(job, name, value)
        session.add(job)
        await session.flush()
        if job.status == "completed":
            assert job.result is not None
            assert job.completed_at is not None
            await write_result(await session.connection(), job, job.result, job.completed_at)
        return job.job_id

    return db(work)


def completed(student_id: str = "s-7", days_ago: float = 0) -> dict[str, Any]:
    when = utcnow() - timedelta(days=days_ago)
    return {
        "student_id": student_id,
        "status": "completed",
        "current_step": "completed",
        "progress": 100,
        "attempts": 1,
        "result": dict(RESULT),
        "started_at": when - timedelta(seconds=35),
        "completed_at": when,
    }


def job_state(db: Db, job_id: UUID) -> ExamProcessingJob | None:
    async def work(session: AsyncSession) -> ExamProcessingJob | None:
        query = select(ExamProcessingJob).where(ExamProcessingJob.job_id == job_id)
        return (await session.execute(query)).scalar_one_or_none()

    return db(work)


# --- exams jobs cancel ---------------------------------------------------------------------------


def test_cancel_a_pending_job(env: dict[str, str], db: Db) -> None:
    job_id = add_job(db, callback_url="https://school.example.edu/hooks/exams")

    done = cli(env, "jobs", "cancel", str(job_id))
    # stdout is the command's answer alone; its log lines go to stderr, as JSON (LOG_FORMAT).
    assert done.stdout.splitlines() == [f"job {job_id} cancelled"]
    logged = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    assert [r["job_id"] for r in logged if r["event"] == "exam processing cancelled"] == [str(job_id)]

    job = job_state(db, job_id)
    assert job is not None
    assert (job.status, job.current_step, job.progress) == ("cancelled", "cancelled", 0)
    assert job.failed_step == "queued", "a retry resumes where it was cancelled"
    assert job.completed_at is not None
    assert (job.error_code, job.error_message) == (None, None)

    async def deliveries(session: AsyncSession) -> list[CallbackDelivery]:
        return list((await session.execute(select(CallbackDelivery))).scalars())

    (delivery,) = db(deliveries)
    assert (delivery.job_id, delivery.event, delivery.state) == (job_id, "job.cancelled", "pending")
    assert json.loads(delivery.payload)["status"] == "cancelled"

    again = cli(env, "jobs", "cancel", str(job_id))
    assert again.stdout.splitlines()[-1] == f"job {job_id} was already cancelled"
    assert len(db(deliveries)) == 1, "no second callback for a second cancel"


def test_cancel_a_processing_job_keeps_its_progress(env: dict[str, str], db: Db) -> None:
    job_id = add_job(
        db,
        status="processing",
        current_step="getting_ai_recommendations",
        progress=37,
        attempts=1,
        started_at=utcnow(),
        heartbeat_at=utcnow(),
    )
    done = cli(env, "jobs", "cancel", str(job_id))
    assert done.stdout.splitlines()[-1] == f"job {job_id} cancelled"
    job = job_state(db, job_id)
    assert job is not None
    assert (job.status, job.current_step, job.progress) == ("cancelled", "cancelled", 37)
    assert job.failed_step == "getting_ai_recommendations"


@pytest.mark.parametrize("status", ["completed", "failed"])
def test_a_finished_job_cannot_be_cancelled(env: dict[str, str], db: Db, status: str) -> None:
    fields = (
        completed()
        if status == "completed"
        else {
            "status": "failed",
            "current_step": "failed",
            "failed_step": "validating_exam",
            "progress": 3,
            "attempts": 1,
            "error_message": "Exam MATH-101 is closed and accepts no submissions.",
            "error_code": "exam_closed",
            "error_params": {"code": "MATH-101"},
            "completed_at": utcnow(),
            "failed_at": utcnow(),
        }
    )
    job_id = add_job(db, **fields)

    refused = cli(env, "jobs", "cancel", str(job_id), code=1)
    assert refused.stdout == ""
    assert refused.stderr.strip() == f"exams: job {job_id} already finished ({status}); it cannot be cancelled"
    job = job_state(db, job_id)
    assert job is not None
    assert job.status == status


def test_cancel_an_unknown_or_malformed_job_id(env: dict[str, str]) -> None:
    unknown = uuid4()
    missing = cli(env, "jobs", "cancel", str(unknown), code=1)
    assert missing.stderr.strip() == f"exams: no job {unknown}"

    malformed = cli(env, "jobs", "cancel", "not-a-uuid", code=2)
    assert "'not-a-uuid' is not a job id (a UUID)" in malformed.stderr


# --- exams callbacks list ------------------------------------------------------------------------

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


def add_deliveries(db: Db) -> dict[str, CallbackDelivery]:
    """One delivery in each state, created a minute apart (``delivered`` newest)."""
    url = "https://school.example.edu/hooks/exams"
    specs = {
        "waiting": {"state": "pending", "attempts": 0, "next_attempt_at": NOW - timedelta(minutes=4)},
        "retrying": {
            "state": "pending",
            "attempts": 3,
            "last_status": 500,
            "last_error": "HTTP 500",
            "last_attempt_at": NOW - timedelta(minutes=2),
            "next_attempt_at": NOW + timedelta(seconds=40),
        },
        "gave_up": {
            "state": "gave_up",
            "attempts": 31,
            "last_error": "no answer within 10 s",
            "last_attempt_at": NOW - timedelta(minutes=1),
            "gave_up_at": NOW - timedelta(minutes=1),
        },
        "delivered": {
            "state": "delivered",
            "attempts": 2,
            "last_status": 204,
            "last_attempt_at": NOW,
            "delivered_at": NOW,
        },
    }

    async def work(session: AsyncSession) -> dict[str, CallbackDelivery]:
        rows = {}
        for minute, (name, fields) in enumerate(specs.items()):
            row = CallbackDelivery(
                delivery_id=uuid4(),
                job_id=uuid4(),
                student_id="s-7",
                url=f"{url}?n={name}",
                event="job.failed" if name == "gave_up" else "job.completed",
                payload="{}",
                created_at=NOW - timedelta(minutes=4 - minute),
                updated_at=NOW,
                **fields,
            )
            session.add(row)
            rows[name] = row
        await session.flush()
        return rows

    return db(work)


def _columns(line: str) -> list[str]:
    return line.split()


def test_callbacks_list_shows_every_delivery_newest_first(env: dict[str, str], db: Db) -> None:
    rows = add_deliveries(db)
    lines = cli(env, "callbacks", "list").stdout.splitlines()

    assert _columns(lines[0]) == ["delivery_id", "job_id", "event", "state", "try", "http", "when", "(UTC)", "url"]
    assert len(lines) == 1 + len(rows)
    by_delivery = {_columns(line)[0]: _columns(line) for line in lines[1:]}
    assert [_columns(line)[0] for line in lines[1:]] == [
        str(rows[name].delivery_id) for name in ("delivered", "gave_up", "retrying", "waiting")
    ]

    def shown(name: str) -> list[str]:
        return by_delivery[str(rows[name].delivery_id)]

    assert shown("delivered") == [
        str(rows["delivered"].delivery_id),
        str(rows["delivered"].job_id),
        "job.completed",
        "delivered",
        "2",
        "204",
        "2026-11-29",
        "12:00:00",
        "https://school.example.edu/hooks/exams?n=delivered",
    ]
    assert shown("gave_up")[2:] == [
        "job.failed",
        "gave_up",
        "31",
        "-",
        "2026-11-29",
        "11:59:00",
        "https://school.example.edu/hooks/exams?n=gave_up",
        *["no", "answer", "within", "10", "s"],
    ]
    # A pending delivery shows when its next attempt is due, and why the last one failed.
    assert shown("retrying")[2:] == [
        "job.completed",
        "pending",
        "3",
        "500",
        "2026-11-29",
        "12:00:40",
        "https://school.example.edu/hooks/exams?n=retrying",
        "HTTP",
        "500",
    ]
    assert shown("waiting")[2:] == [
        "job.completed",
        "pending",
        "0",
        "-",
        "2026-11-29",
        "11:56:00",
        "https://school.example.edu/hooks/exams?n=waiting",
    ]


def test_callbacks_list_failed_shows_given_up_and_failing_deliveries(env: dict[str, str], db: Db) -> None:
    rows = add_deliveries(db)
    lines = cli(env, "callbacks", "list", "--failed").stdout.splitlines()
    assert _columns(lines[0])[:4] == ["delivery_id", "job_id", "event", "state"]
    assert [_columns(line)[0] for line in lines[1:]] == [
        str(rows[name].delivery_id) for name in ("gave_up", "retrying")
    ], "given up, or pending after a failed attempt; neither delivered nor never tried"


def test_callbacks_list_without_deliveries(env: dict[str, str]) -> None:
    for args in (["callbacks", "list"], ["callbacks", "list", "--failed"]):
        lines = cli(env, *args).stdout.splitlines()
        assert lines[1:] == ["(no deliveries)"]


# --- exams students erase ------------------------------------------------------------------------


def _counts(db: Db, student_id: str) -> dict[str, int]:
    async def work(session: AsyncSession) -> dict[str, int]:
        result_ids = select(ExamResult.id).where(ExamResult.student_id == student_id)
        count = select(func.count())
        return {
            "jobs": await session.scalar(
                count.select_from(ExamProcessingJob).where(ExamProcessingJob.student_id == student_id)
            )
            or 0,
            "results": await session.scalar(count.select_from(ExamResult).where(ExamResult.student_id == student_id))
            or 0,
            "topics": await session.scalar(
                count.select_from(ExamResultTopic).where(ExamResultTopic.result_id.in_(result_ids))
            )
            or 0,
            "deliveries": await session.scalar(
                count.select_from(CallbackDelivery).where(CallbackDelivery.student_id == student_id)
            )
            or 0,
        }

    return db(work)


def _audit(db: Db) -> list[AuditEntry]:
    async def work(session: AsyncSession) -> list[AuditEntry]:
        return list((await session.execute(select(AuditEntry).order_by(AuditEntry.id))).scalars())

    return db(work)


def _delivery(job_id: UUID, student_id: str) -> CallbackDelivery:
    return CallbackDelivery(
        job_id=job_id,
        student_id=student_id,
        url="https://school.example.edu/hooks/exams",
        event="job.completed",
        payload=json.dumps({"job_id": str(job_id), "student_id": student_id}),
        state="delivered",
        attempts=1,
        last_status=200,
        delivered_at=utcnow(),
    )


def test_erase_a_student(env: dict[str, str], db: Db) -> None:
    secret_answers = {**ANSWERS, "q5": SECRET_ANSWER}
    graded = add_job(db, answers=secret_answers, **completed("s-7"))
    add_job(
        db,
        answers=secret_answers,
        student_id="s-7",
        status="failed",
        current_step="failed",
        failed_step="getting_ai_recommendations",
        error_message="Gave up after 3 attempts: AI request failed: HTTP 500 from AI API",
        error_code="ai_unavailable",
        completed_at=utcnow(),
        failed_at=utcnow(),
    )
    add_job(db, answers=secret_answers, student_id="s-7")  # still pending
    kept = add_job(db, **completed("s-8"))

    async def extra(session: AsyncSession) -> None:
        # A result whose job the daily cleanup already deleted.
        old_job = ExamProcessingJob(job_id=uuid4(), exam_code="SCI-201", student_id="s-7", answers=secret_answers)
        await write_result(await session.connection(), old_job, dict(RESULT), utcnow() - timedelta(days=30))
        session.add_all([_delivery(graded, "s-7"), _delivery(uuid4(), "s-7"), _delivery(kept, "s-8")])

    db(extra)
    assert _counts(db, "s-7") == {"jobs": 3, "results": 2, "topics": 6, "deliveries": 2}
    before_other = _counts(db, "s-8")
    assert before_other == {"jobs": 1, "results": 1, "topics": 3, "deliveries": 1}

    done = cli(env, "students", "erase", "s-7")
    assert done.stdout.strip() == "erased student s-7: 3 job(s), 2 result(s), 2 callback delivery(ies)"

    assert _counts(db, "s-7") == {"jobs": 0, "results": 0, "topics": 0, "deliveries": 0}
    assert _counts(db, "s-8") == before_other, "another student's data is kept"

    async def orphan_topics(session: AsyncSession) -> int:
        orphans = (
            select(func.count())
            .select_from(ExamResultTopic)
            .where(ExamResultTopic.result_id.not_in(select(ExamResult.id)))
        )
        return await session.scalar(orphans) or 0

    assert db(orphan_topics) == 0

    (entry,) = _audit(db)
    assert entry.action == "students.erase"
    assert entry.actor.startswith("cli:")
    assert entry.target == {"student_id": "s-7"}
    assert entry.detail == {"jobs": 3, "results": 2, "callback_deliveries": 2}
    assert entry.count == 5
    written = json.dumps([entry.target, entry.detail], ensure_ascii=False)
    assert SECRET_ANSWER not in written
    assert "answers" not in written


def test_erase_an_unknown_student(env: dict[str, str], db: Db) -> None:
    kept = add_job(db, **completed("s-8"))
    done = cli(env, "students", "erase", "nobody")
    assert done.stdout.strip() == "erased student nobody: 0 job(s), 0 result(s), 0 callback delivery(ies)"
    assert _counts(db, "s-8")["results"] == 1
    assert job_state(db, kept) is not None
    (entry,) = _audit(db)
    assert (entry.action, entry.target, entry.count) == ("students.erase", {"student_id": "nobody"}, 0)


@pytest.mark.parametrize("student_id", ["", "   ", "s-7\n"])
def test_erase_needs_a_printable_student_id(env: dict[str, str], db: Db, student_id: str) -> None:
    add_job(db, **completed("s-7"))
    refused = cli(env, "students", "erase", student_id, code=2)
    assert "STUDENT_ID" in refused.stderr
    assert _counts(db, "s-7")["results"] == 1
    assert _audit(db) == []


# --- exams jobs requeue ------------------------------------------------------------------------


def test_requeue_needs_pending_or_stalled(env: dict[str, str]) -> None:
    done = cli(env, "jobs", "requeue", code=2)
    assert "give --pending-older-than S, --stalled, or both" in done.output


def test_requeue_in_embedded_mode_marks_lost_jobs_for_the_running_server(env: dict[str, str], db: Db) -> None:
    """Embedded: the in-memory queue lives in `exams serve`, so the command marks the jobs for its
    reconciler (pending: unsent; stalled: released) and audits what it did."""
    hour_ago = utcnow() - timedelta(hours=1)
    lost = add_job(db, created_at=hour_ago, enqueued_at=hour_ago)
    recent = add_job(db, enqueued_at=utcnow())
    stalled = add_job(
        db,
        status="processing",
        attempts=1,
        current_step="getting_ai_recommendations",
        progress=40,
        created_at=hour_ago,
        heartbeat_at=hour_ago,
    )
    alive = add_job(db, status="processing", attempts=1, heartbeat_at=utcnow())

    done = cli(env, "jobs", "requeue", "--pending-older-than", "600", "--stalled")
    assert done.stdout.splitlines() == [
        "1 pending and 1 stalled job(s) marked for the running server to send (of 2 found)"
    ]
    lost_job, recent_job, stalled_job, alive_job = (job_state(db, j) for j in (lost, recent, stalled, alive))
    assert lost_job is not None
    assert lost_job.enqueued_at is None
    assert recent_job is not None
    assert recent_job.enqueued_at is not None
    assert stalled_job is not None
    assert (stalled_job.status, stalled_job.progress, stalled_job.heartbeat_at) == ("processing", 40, None)
    assert alive_job is not None
    assert alive_job.heartbeat_at is not None
    (entry,) = [e for e in _audit(db) if e.action == "jobs.requeue"]
    assert entry.count == 2
    assert entry.actor.startswith("cli:")
    assert sorted(entry.detail["job_ids"]) == sorted([str(lost), str(stalled)])


def test_requeue_with_a_broker_sends_the_lost_jobs_again(env: dict[str, str], db: Db) -> None:
    """With Redis as the broker the jobs are sent at once (paced), each exactly once."""
    import redis

    from support import REDIS_URL

    namespace = "dramatiq"
    client = redis.Redis.from_url(REDIS_URL)
    client.delete(f"{namespace}:exams")
    hour_ago = utcnow() - timedelta(hours=1)
    lost = add_job(db, created_at=hour_ago, enqueued_at=hour_ago)
    stalled = add_job(db, status="processing", attempts=1, created_at=hour_ago, heartbeat_at=hour_ago)
    try:
        done = cli(
            {**env, "QUEUE_CONNECTION": "redis", "REDIS_URL": REDIS_URL},
            "jobs",
            "requeue",
            "--pending-older-than",
            "600",
            "--stalled",
        )
        assert done.stdout.splitlines() == ["1 pending and 1 stalled job(s) sent again (of 2 found)"]
        messages = [json.loads(raw) for raw in client.hvals(f"{namespace}:exams.msgs")]
        assert sorted(m["args"][0] for m in messages if m["actor_name"] == "process_exam") == sorted(
            [str(lost), str(stalled)]
        )
    finally:
        client.delete(f"{namespace}:exams", f"{namespace}:exams.msgs")
