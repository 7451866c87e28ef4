"""What the dashboard's pages show, in process: failure groups labelled in the reader's language,
a job's callback deliveries, machine tokens that never wrap, words from the catalogs; and the
audit entries of ``exams jobs retry`` and ``exams jobs cleanup``.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import select
from test_access import OPERATOR_PASSWORD, csrf_of, login, run, store_job

from admin.formatting import Formatter
from core.audit import AuditEntry
from core.db import Database
from core.settings import load_settings
from jobs.errors import JobError
from jobs.models import CallbackDelivery, ExamProcessingJob, utcnow
from server.cli import main
from server.migrate import run_migrations
from support import MATH_ANSWERS, NO_ENV_FILE, ExamsApp, sqlite_url

CSS = Path(__file__).resolve().parents[2] / "src" / "server" / "static" / "css" / "admin.css"


def failed_job(app: ExamsApp, step: str, error: JobError | str, student: str = "s-1042") -> str:
    job = ExamProcessingJob(
        exam_code="MATH-101",
        student_id=student,
        answers=dict(MATH_ANSWERS),
        status="processing",
        current_step=step,
    )
    job.mark_failed(error, utcnow())

    async def work(database: Database) -> str:
        async with database.transaction() as session:
            session.add(job)
            await session.flush()
            return str(job.job_id)

    return str(run(work, app))


def test_failure_groups_are_keyed_by_code_and_labelled_in_the_readers_language(admin_app: ExamsApp) -> None:
    ai_500 = JobError("ai_unavailable", {"reason": "HTTP 500"})
    coded = [failed_job(admin_app, "getting_ai_recommendations", ai_500.exhausted(n)) for n in (3, 4)]
    failed_job(admin_app, "finalizing_results", ai_500)
    failed_job(admin_app, "validating_exam", "exam SCI-200 is closed")
    client = admin_app.http
    assert login(client, "ops", OPERATOR_PASSWORD).status_code == 303
    english = client.get("/admin/failed?lang=en").text
    assert english.count('data-code="ai_unavailable"') == 2  # same code, two steps
    assert english.count('data-code=""') == 1  # a row without a code, grouped by its message
    assert "Gave up after 4 attempts: AI request failed: HTTP 500" in english  # the latest one
    arabic = client.get("/admin/failed?lang=ar").text
    assert "توقفت المحاولات بعد 4 محاولات: فشل طلب الذكاء الاصطناعي: HTTP 500" in arabic
    assert "exam SCI-200 is closed" in arabic  # no code: the stored (English) message

    # Retrying the group selects exactly its jobs: not the same code in another step.
    group = re.search(
        r'<tr data-group="([0-9a-f]+)" data-code="ai_unavailable">\s*<td class="cause" title="Gave up', english
    )
    assert group
    headers = {"X-CSRF-Token": csrf_of(client, "/admin/failed"), "HX-Request": "true"}
    preview = client.post(
        "/admin/actions/preview?lang=en",
        data={"action": "retry", "scope": "group", "group": group.group(1)},
        headers=headers,
    )
    assert preview.status_code == 200
    assert "Jobs to queue again: 2" in preview.text
    # The failed list shows each job's error in the reader's language too.
    assert arabic.count("فشل طلب الذكاء الاصطناعي: HTTP 500") >= 3
    assert all(job_id in english for job_id in coded)


def test_the_job_page_lists_its_callback_deliveries(admin_app: ExamsApp) -> None:
    job_id = failed_job(admin_app, "getting_ai_recommendations", JobError("ai_unavailable", {"reason": "HTTP 500"}))
    now = utcnow()

    async def deliveries(database: Database) -> None:
        async with database.transaction() as session:
            common = {"student_id": "s-1042", "event": "job.failed", "payload": "{}"}
            session.add_all(
                [
                    CallbackDelivery(
                        job_id=job_id,
                        url="https://hooks.example.edu:8443/exams?token=secret",
                        state="pending",
                        attempts=2,
                        last_status=500,
                        last_attempt_at=now,
                        next_attempt_at=now + timedelta(minutes=5),
                        **common,
                    ),
                    CallbackDelivery(
                        job_id=job_id,
                        url="https://lms.example.org/cb",
                        state="delivered",
                        attempts=1,
                        last_status=204,
                        delivered_at=now,
                        **common,
                    ),
                    CallbackDelivery(
                        job_id=job_id,
                        url="https://old.example.net/cb",
                        state="gave_up",
                        attempts=30,
                        last_error="ConnectError: connection refused",
                        gave_up_at=now,
                        **common,
                    ),
                ]
            )

    run(deliveries, admin_app)
    other = store_job(admin_app)
    client = admin_app.http
    assert login(client, "ops", OPERATOR_PASSWORD).status_code == 303
    page = client.get(f"/admin/jobs/{job_id}?lang=en").text
    table = page[page.index('id="callback-deliveries"') :]
    assert table.count("data-delivery-id=") == 3
    assert ">hooks.example.edu:8443<" in table  # the host, not the path or its query
    assert "token=secret" not in table.split("title=")[0]
    assert "HTTP 500" in table
    assert "HTTP 204" in table
    assert "ConnectError: connection refused" in table
    for state, label in (("pending", "Retrying"), ("delivered", "Delivered"), ("gave_up", "Gave up")):
        assert f'data-state="{state}"' in table
        assert label in table
    assert "<form" not in table  # read-only
    assert "استجابة HTTP 500" in client.get(f"/admin/jobs/{job_id}?lang=ar").text
    assert "the submission gave no callback address" in client.get(f"/admin/jobs/{other}?lang=en").text


def test_machine_tokens_do_not_wrap_and_words_come_from_the_catalogs(admin_app: ExamsApp) -> None:
    job_id = store_job(admin_app, student_id="s-1042")
    client = admin_app.http
    assert login(client, "ops", OPERATOR_PASSWORD).status_code == 303
    jobs = client.get("/admin/jobs?lang=ar").text
    row = jobs[jobs.index(f'data-job-id="{job_id}"') :]
    assert '<bdi class="token">s-1042</bdi>' in row
    assert '<bdi class="code token" dir="ltr">MATH-101</bdi>' in row
    assert 'class="code token"' in row.split("</td>")[0]  # the job id link
    css = CSS.read_text(encoding="utf-8")
    token_rule = css[css.index(".token {") :].split("}")[0]
    assert "white-space: nowrap" in token_rule
    assert "unicode-bidi: isolate" in token_rule

    overview = client.get("/admin?lang=ar").text
    assert ">p50<" not in overview
    assert ">p95<" not in overview
    assert "الوسيط" in overview
    assert ">/metrics<" not in overview
    assert "المقاييس الخام" in overview
    assert ">p50<" in client.get("/admin?lang=en").text
    assert Formatter("en").seconds(0.85) == "850 ms"
    assert Formatter("en").seconds(4.25) == "4.2 s"
    assert Formatter("ar").seconds(0.85).endswith("ملي ث")
    assert Formatter("ar").seconds(4.25).endswith(" ث")


# --- the command line's audit entries ----------------------------------------------------------


@pytest.fixture
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    monkeypatch.chdir(tmp_path)
    environ = {"DATABASE_URL": sqlite_url(tmp_path), "LOG_FORMAT": "json", "QUEUE_CONNECTION": "embedded"}
    run_migrations(load_settings(environ, env_file=NO_ENV_FILE))
    return environ


def _in_db(env: dict[str, str], work: Callable[[Database], object]) -> object:
    async def go() -> object:
        database = Database.from_settings(load_settings(env, env_file=NO_ENV_FILE))
        try:
            return await work(database)  # type: ignore[misc]
        finally:
            await database.dispose()

    return asyncio.run(go())


def _exams(env: dict[str, str], *args: str, code: int = 0) -> str:
    result = CliRunner().invoke(main, list(args), env=env)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code == code, result.output
    return result.output


def test_cli_retry_and_cleanup_are_audited(cli_env: dict[str, str]) -> None:
    long_ago = utcnow() - timedelta(days=30)

    async def seed(database: Database) -> list[str]:
        async with database.transaction() as session:
            jobs = [
                ExamProcessingJob(
                    exam_code="MATH-101",
                    student_id=f"s-{i}",
                    answers={},
                    status="processing",
                    current_step="processing_answers",
                )
                for i in range(3)
            ]
            for job in jobs:
                job.mark_failed("AI request failed: HTTP 500", utcnow())
            session.add(
                ExamProcessingJob(
                    exam_code="MATH-101",
                    student_id="old",
                    answers={},
                    status="completed",
                    current_step="completed",
                    progress=100,
                    created_at=long_ago,
                    completed_at=long_ago,
                )
            )
            session.add_all(jobs)
            await session.flush()
            return [str(job.job_id) for job in jobs]

    ids = _in_db(cli_env, seed)
    assert isinstance(ids, list)
    _exams(cli_env, "jobs", "retry", ids[0])
    _exams(cli_env, "jobs", "retry", "--failed")
    assert "would delete 1 job(s)" in _exams(cli_env, "jobs", "cleanup", "--older-than-days", "7", "--dry-run")
    assert "deleted 1 job(s)" in _exams(cli_env, "jobs", "cleanup", "--older-than-days", "7")

    async def entries(database: Database) -> list[AuditEntry]:
        async with database.sessions() as session:
            return list((await session.execute(select(AuditEntry).order_by(AuditEntry.id))).scalars().all())

    audit = _in_db(cli_env, entries)
    assert isinstance(audit, list)
    assert [(e.action, e.count) for e in audit] == [("jobs.retry", 1), ("jobs.retry", 2), ("cleanup.run", 1)]
    assert all(e.actor.startswith("cli:") for e in audit)
    one, every, cleanup = audit
    assert one.target == {"job_ids": [ids[0]]}
    assert every.target == {"filter": {"status": "failed"}}
    assert sorted(every.detail["job_ids"]) == sorted(ids[1:])
    assert cleanup.target["retention_days"] == 7
    assert cleanup.detail["trigger"] == "cli"


@pytest.mark.parametrize(
    ("source", "words"),
    [
        ("ai", "From the AI tutor"),
        ("rule_based", "Rule-based (the AI is turned off)"),
        ("rule_based_fallback", "Rule-based: the AI tutor was unavailable"),
    ],
)
def test_the_job_page_says_where_the_recommendations_came_from(admin_app: ExamsApp, source: str, words: str) -> None:
    """A job completed with the rule-based fallback says so in words (issue 11), in both languages."""
    result = {
        "score": 5,
        "max_score": 6,
        "percentage": 83.3,
        "passed": True,
        "topics": [],
        "questions": [],
        "recommendations": [],
        "recommendations_source": source,
        "processed_at": "2026-11-28T10:00:00Z",
    }
    job_id = store_job(
        admin_app, status="completed", current_step="completed", progress=100, result=result, completed_at=utcnow()
    )
    client = admin_app.http
    assert login(client, "ops", OPERATOR_PASSWORD).status_code == 303
    page = client.get(f"/admin/jobs/{job_id}?lang=en").text
    assert words in page
    assert ('data-testid="fallback-note"' in page) == (source == "rule_based_fallback")
    arabic = client.get(f"/admin/jobs/{job_id}?lang=ar").text
    if source == "rule_based_fallback":
        assert "المعلّم الذكي لم يكن متاحًا" in arabic


def test_requeue_lost_jobs_from_the_dashboard(admin_app: ExamsApp) -> None:
    """Preview counts pending-too-long and stalled jobs; running it re-sends them and audits it."""
    hour_ago = utcnow() - timedelta(hours=1)
    lost = store_job(admin_app, created_at=hour_ago, enqueued_at=hour_ago)
    stalled = store_job(
        admin_app,
        status="processing",
        attempts=1,
        current_step="validating_exam",
        created_at=hour_ago,
        heartbeat_at=hour_ago,
    )
    client = admin_app.http
    assert login(client, "ops", OPERATOR_PASSWORD).status_code == 303
    token = csrf_of(client, "/admin/failed")
    headers = {"X-CSRF-Token": token, "HX-Request": "true"}
    form = {"pending_older_than": "600", "stalled": "on"}

    bad = client.post("/admin/requeue/preview", data={"pending_older_than": "-5"}, headers=headers)
    assert bad.status_code == 422
    assert "Enter a number of seconds" in bad.text
    preview = client.post("/admin/requeue/preview", data=form, headers=headers)
    assert preview.status_code == 200
    assert "Found: 1 pending, 1 stalled." in preview.text
    assert admin_app.status(lost)["status"] == "pending"  # a preview changes nothing

    done = client.post("/admin/requeue/run", data=form, headers=headers)
    assert done.status_code == 200
    for job_id in (lost, stalled):  # sent again: the embedded worker runs both to the end
        final, _ = admin_app.wait_final(job_id, timeout=60)
        assert final["status"] == "completed", final
    audit = client.get("/admin/audit?lang=en").text
    assert "re-sent lost jobs" in audit
