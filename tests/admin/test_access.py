"""Who may see and do what on ``/admin``, in process (the app behind Litestar's test client).

Every route refuses anonymous requests (walked from the app's route table), CSRF is required on
every POST, viewers read but cannot act, wrong passwords lock the name out, sessions expire and
end at logout, and operator actions (retry, cancel) land in the audit log.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import Callable
from datetime import timedelta

import httpx
from litestar.testing import TestClient
from sqlalchemy import select, update

from admin.auth import MAX_FAILURES, create_user
from admin.models import AdminSession
from core.audit import AuditEntry
from core.db import Database
from jobs.models import ExamProcessingJob, utcnow
from support import MATH_ANSWERS, ExamsApp

OPERATOR_PASSWORD = "operator-password-1"
VIEWER_PASSWORD = "viewer-password-1"
CSRF = re.compile(r'name="_csrf" value="([^"]+)"')
LOGIN_TOKEN = re.compile(r'name="_login" value="([^"]+)"')


def run(coro_factory: Callable[[Database], object], app: ExamsApp) -> object:
    async def go() -> object:
        database = Database.from_settings(app.settings)
        try:
            return await coro_factory(database)  # type: ignore[misc]
        finally:
            await database.dispose()

    return asyncio.run(go())


def add_user(app: ExamsApp, name: str, role: str, password: str) -> None:
    async def work(database: Database) -> None:
        async with database.transaction() as session:
            await create_user(session, app.settings, name, role, password)

    run(work, app)


def login(client: TestClient, username: str, password: str) -> httpx.Response:
    page = client.get("/admin/login")
    token = LOGIN_TOKEN.search(page.text)
    assert token, page.text
    return client.post(
        "/admin/login",
        data={"username": username, "password": password, "_login": token.group(1), "next": "/admin"},
        follow_redirects=False,
    )


def csrf_of(client: TestClient, path: str = "/admin/cleanup") -> str:
    response = client.get(path)
    assert response.status_code == 200, response.text
    match = CSRF.search(response.text)
    assert match, "no CSRF token on the page"
    return match.group(1)


def store_job(app: ExamsApp, **fields: object) -> str:
    """Store a job directly: by default pending and already sent (so no worker picks it up here)."""

    async def work(database: Database) -> str:
        async with database.transaction() as session:
            values: dict[str, object] = {
                "exam_code": "MATH-101",
                "student_id": "s-1042",
                "answers": dict(MATH_ANSWERS),
                "status": "pending",
                "current_step": "queued",
                "enqueued_at": utcnow(),
            }
            values.update(fields)
            job = ExamProcessingJob(**values)
            session.add(job)
            await session.flush()
            return str(job.job_id)

    return str(run(work, app))


def audit_entries(app: ExamsApp, action: str) -> list[AuditEntry]:
    async def work(database: Database) -> list[AuditEntry]:
        async with database.sessions() as session:
            stmt = select(AuditEntry).where(AuditEntry.action == action).order_by(AuditEntry.id)
            return list((await session.execute(stmt)).scalars().all())

    return list(run(work, app))  # type: ignore[call-overload]


def fail_job(app: ExamsApp) -> str:
    """Store a failed job directly (what the pipeline leaves after the AI gave up)."""

    async def work(database: Database) -> str:
        async with database.transaction() as session:
            job = ExamProcessingJob(
                exam_code="MATH-101",
                student_id="s-9",
                answers=dict(MATH_ANSWERS),
                status="failed",
                current_step="failed",
                failed_step="validating_exam",
                error_message="gave up after 3 attempts: AI request failed: HTTP 500",
                failed_at=utcnow(),
                completed_at=utcnow(),
                progress=20,
            )
            session.add(job)
            await session.flush()
            return str(job.job_id)

    return str(run(work, app))


def admin_paths(app: ExamsApp) -> list[tuple[str, str]]:
    """Every (method, concrete path) of the dashboard, from the app's route table."""
    found: list[tuple[str, str]] = []
    for route in app.http.app.routes:
        if not route.path.startswith("/admin"):
            continue
        path = route.path.replace("{job_id:uuid}", str(uuid.uuid4())).replace("{op_id:int}", "1")
        for method in sorted(getattr(route, "methods", set()) - {"HEAD", "OPTIONS"}):
            if path == "/admin/login":
                continue
            found.append((method, path))
    return found


def test_every_admin_route_refuses_anonymous_requests(admin_app: ExamsApp) -> None:
    paths = admin_paths(admin_app)
    assert len(paths) >= 15, paths
    client = admin_app.http
    for method, path in paths:
        response = client.request(method, path, follow_redirects=False)
        assert response.status_code == 303, (method, path, response.status_code)
        assert response.headers["location"].startswith("/admin/login?next="), (method, path)
        htmx = client.request(method, path, headers={"HX-Request": "true"}, follow_redirects=False)
        assert htmx.status_code == 401, (method, path, htmx.status_code)


def test_login_sets_a_hardened_cookie_and_a_new_session_id(admin_app: ExamsApp) -> None:
    client = admin_app.http
    first = login(client, "ops", OPERATOR_PASSWORD)
    assert first.status_code == 303
    assert first.headers["location"] == "/admin"
    cookie = first.headers["set-cookie"]
    assert "exams_admin_session=" in cookie
    assert "HttpOnly" in cookie
    assert "SameSite=lax" in cookie.replace("Lax", "lax")
    assert "Path=/admin" in cookie
    assert "Secure" not in cookie  # plain HTTP here; HTTPS requests get Secure
    old = client.cookies.get("exams_admin_session")
    second = login(client, "ops", OPERATOR_PASSWORD)
    assert second.status_code == 303
    assert client.cookies.get("exams_admin_session") != old
    page = client.get("/admin")
    assert page.status_code == 200
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp
    assert "unsafe-inline" not in csp
    assert "frame-ancestors 'none'" in csp
    assert "<script>" not in page.text
    assert " style=" not in page.text


def test_wrong_password_is_refused_and_repeated_failures_lock_the_name(admin_app: ExamsApp) -> None:
    client = admin_app.http
    wrong = login(client, "ops", "not-the-password")
    assert wrong.status_code == 401
    assert "exams_admin_session" not in client.cookies
    for _ in range(MAX_FAILURES - 1):
        login(client, "ops", "still-wrong")
    locked = login(client, "ops", OPERATOR_PASSWORD)  # even the right password, while locked
    assert locked.status_code == 429
    assert "Try again in" in locked.text
    assert client.get("/admin", follow_redirects=False).status_code == 303
    # The other user is not affected.
    assert login(client, "vera", VIEWER_PASSWORD).status_code == 303


def test_a_login_without_its_form_token_is_refused(admin_app: ExamsApp) -> None:
    response = admin_app.http.post(
        "/admin/login", data={"username": "ops", "password": OPERATOR_PASSWORD}, follow_redirects=False
    )
    assert response.status_code == 403


def test_post_without_or_with_a_wrong_csrf_token_is_refused(admin_app: ExamsApp) -> None:
    client = admin_app.http
    assert login(client, "ops", OPERATOR_PASSWORD).status_code == 303
    token = csrf_of(client)
    assert client.post("/admin/cleanup/preview", data={"days": "7"}).status_code == 403
    assert client.post("/admin/cleanup/preview", data={"days": "7", "_csrf": "forged"}).status_code == 403
    assert client.post("/admin/cleanup/preview", headers={"X-CSRF-Token": "forged"}).status_code == 403
    ok = client.post("/admin/cleanup/preview", data={"days": "7"}, headers={"X-CSRF-Token": token})
    assert ok.status_code == 200
    assert "would be deleted" in ok.text
    assert client.post("/admin/cleanup/preview", data={"days": "7", "_csrf": token}).status_code == 200


def test_a_viewer_reads_but_cannot_retry(admin_app: ExamsApp) -> None:
    job_id = fail_job(admin_app)
    client = admin_app.http
    assert login(client, "vera", VIEWER_PASSWORD).status_code == 303
    failed = client.get("/admin/failed")
    assert failed.status_code == 200
    assert "HTTP 500" in failed.text
    assert "retry-group" not in failed.text
    assert "/admin/actions/preview" not in failed.text
    job_page = client.get(f"/admin/jobs/{job_id}")
    assert job_page.status_code == 200
    assert "retry-job" not in job_page.text
    token = CSRF.search(job_page.text).group(1)  # type: ignore[union-attr]  (the logout form's)
    refused = client.post(
        "/admin/actions/preview",
        data={"action": "retry", "scope": "job", "job_id": job_id, "_csrf": token},
    )
    assert refused.status_code == 403
    refused_run = client.post(
        "/admin/actions/run",
        data={
            "action": "retry",
            "scope": "job",
            "job_id": job_id,
            "expected": "1",
            "failed_before": utcnow().isoformat(),
        },
        headers={"X-CSRF-Token": token},
    )
    assert refused_run.status_code == 403
    assert admin_app.status(job_id)["status"] == "failed"


def test_operator_retry_is_previewed_confirmed_and_audited(admin_app: ExamsApp) -> None:
    job_id = fail_job(admin_app)
    client = admin_app.http
    assert login(client, "ops", OPERATOR_PASSWORD).status_code == 303
    token = csrf_of(client, f"/admin/jobs/{job_id}")
    headers = {"X-CSRF-Token": token, "HX-Request": "true"}
    preview = client.post(
        "/admin/actions/preview", data={"action": "retry", "scope": "job", "job_id": job_id}, headers=headers
    )
    assert preview.status_code == 200
    assert "Jobs to queue again: 1" in preview.text
    frozen = re.search(r'name="failed_before" value="([^"]+)"', preview.text)
    assert frozen
    assert admin_app.status(job_id)["status"] == "failed"  # a preview changes nothing
    done = client.post(
        "/admin/actions/run",
        data={"action": "retry", "scope": "job", "job_id": job_id, "expected": "1", "failed_before": frozen.group(1)},
        headers=headers,
    )
    assert done.status_code == 200
    assert "data-operation" in done.text
    # The retry runs in the background (at ADMIN_RETRY_RATE): the job leaves `failed`, then ends.
    deadline = time.monotonic() + 30
    while admin_app.status(job_id)["status"] == "failed" and time.monotonic() < deadline:
        time.sleep(0.05)
    final, _ = admin_app.wait_final(job_id, timeout=60)
    assert final["status"] == "completed"

    async def entries(database: Database) -> list[AuditEntry]:
        async with database.sessions() as session:
            return list((await session.execute(select(AuditEntry).order_by(AuditEntry.id))).scalars().all())

    audit = run(entries, admin_app)
    retry = [e for e in audit if e.action == "jobs.retry"]  # type: ignore[attr-defined]
    assert len(retry) == 1
    assert retry[0].actor == "ops"
    assert retry[0].count == 1
    assert job_id in str(retry[0].target)
    log_page = client.get("/admin/audit")
    assert "retried jobs" in log_page.text
    assert "ops" in log_page.text


def test_bad_input_gets_a_localized_error_and_changes_nothing(admin_app: ExamsApp) -> None:
    fail_job(admin_app)
    client = admin_app.http
    assert login(client, "ops", OPERATOR_PASSWORD).status_code == 303
    token = csrf_of(client)
    headers = {"X-CSRF-Token": token, "HX-Request": "true"}
    bad_days = client.post("/admin/cleanup/preview", data={"days": "-3"}, headers=headers)
    assert bad_days.status_code == 422
    assert "whole number of days" in bad_days.text
    arabic = client.post("/admin/cleanup/preview?lang=ar", data={"days": "abc"}, headers=headers)
    assert arabic.status_code == 422
    assert "أدخل عدداً صحيحاً" in arabic.text
    bad_filter = client.get("/admin/jobs?status=exploded&from=yesterday&lang=en")
    assert bad_filter.status_code == 422
    assert "not a known status" in bad_filter.text
    bad_ids = client.post(
        "/admin/actions/preview", data={"action": "retry", "scope": "selected", "job_id": "nope"}, headers=headers
    )
    assert bad_ids.status_code == 422
    assert "not valid" in bad_ids.text
    typed = client.post(
        "/admin/actions/run",
        data={"action": "delete", "scope": "filter", "expected": "500", "failed_before": utcnow().isoformat()},
        headers=headers,
    )
    assert typed.status_code == 422
    assert "Type the number of jobs" in typed.text
    assert client.get("/admin/failed?lang=en").text.count('data-job-id="') == 1


def test_sessions_expire_and_logout_ends_them(admin_app: ExamsApp) -> None:
    client = admin_app.http
    assert login(client, "ops", OPERATOR_PASSWORD).status_code == 303
    assert client.get("/admin", follow_redirects=False).status_code == 200

    async def expire(database: Database) -> None:
        async with database.transaction() as session:
            await session.execute(update(AdminSession).values(expires_at=utcnow() - timedelta(seconds=1)))

    run(expire, admin_app)
    assert client.get("/admin", follow_redirects=False).status_code == 303
    assert login(client, "ops", OPERATOR_PASSWORD).status_code == 303
    token = csrf_of(client)
    stolen = client.cookies.get("exams_admin_session")
    out = client.post("/admin/logout", data={"_csrf": token}, follow_redirects=False)
    assert out.status_code == 303
    assert out.headers["location"] == "/admin/login"
    client.cookies.set("exams_admin_session", stolen or "", path="/admin")
    assert client.get("/admin", follow_redirects=False).status_code == 303  # the old id is dead


def test_every_page_renders_in_english_and_arabic(admin_app: ExamsApp) -> None:
    job_id = fail_job(admin_app)
    client = admin_app.http
    assert login(client, "ops", OPERATOR_PASSWORD).status_code == 303
    pages = ["/admin", "/admin/jobs", f"/admin/jobs/{job_id}", "/admin/failed", "/admin/cleanup", "/admin/audit"]
    for path in pages:
        en = client.get(f"{path}?lang=en")
        assert en.status_code == 200, (path, en.text[:500])
        assert '<html lang="en" dir="ltr">' in en.text
        ar = client.get(f"{path}?lang=ar")
        assert ar.status_code == 200, path
        assert '<html lang="ar" dir="rtl">' in ar.text
    # The choice sticks (cookie) for the next page without ?lang=.
    assert '<html lang="ar" dir="rtl">' in client.get("/admin/jobs").text


def test_operator_cancels_a_job_after_confirming_and_it_is_audited(admin_app: ExamsApp) -> None:
    job_id = store_job(admin_app, callback_url="https://hooks.example.edu/exams")
    client = admin_app.http
    assert login(client, "ops", OPERATOR_PASSWORD).status_code == 303
    job_page = client.get(f"/admin/jobs/{job_id}")
    assert 'id="cancel-job"' in job_page.text
    token = CSRF.search(job_page.text).group(1)  # type: ignore[union-attr]
    headers = {"X-CSRF-Token": token, "HX-Request": "true"}

    preview = client.post(f"/admin/jobs/{job_id}/cancel/preview", headers=headers)
    assert preview.status_code == 200
    assert "Cancel this job?" in preview.text
    assert 'name="confirm" value="yes"' in preview.text
    assert "job.cancelled" in preview.text  # it says the callback will be sent
    assert admin_app.status(job_id)["status"] == "pending"  # a preview changes nothing
    unconfirmed = client.post(f"/admin/jobs/{job_id}/cancel", headers=headers)
    assert unconfirmed.status_code == 422
    assert admin_app.status(job_id)["status"] == "pending"
    assert client.post(f"/admin/jobs/{job_id}/cancel", data={"confirm": "yes"}).status_code == 403  # no CSRF

    done = client.post(f"/admin/jobs/{job_id}/cancel", data={"confirm": "yes"}, headers=headers)
    assert done.status_code == 200
    assert "Job cancelled" in done.text
    assert done.headers["hx-trigger"] == "job-changed"
    status = admin_app.status(job_id)
    assert (status["status"], status["current_step"]) == ("cancelled", "cancelled")
    entries = audit_entries(admin_app, "jobs.cancel")
    assert [(e.actor, e.count, e.target) for e in entries] == [("ops", 1, {"job_ids": [job_id]})]

    again = client.post(f"/admin/jobs/{job_id}/cancel", data={"confirm": "yes"}, headers=headers)
    assert again.status_code == 200
    assert "already cancelled" in again.text
    assert len(audit_entries(admin_app, "jobs.cancel")) == 1  # nothing changed, nothing audited

    page = client.get(f"/admin/jobs/{job_id}?lang=en")
    assert 'id="job-status">Cancelled<' in page.text
    assert 'id="cancel-job"' not in page.text
    assert 'id="retry-job"' in page.text  # a cancelled job can be retried like a failed one
    assert "timeline__step--cancelled" in page.text
    # Its callback delivery (job.cancelled) is listed: pending, or already given up by the embedded
    # worker (this app allows no callback host), whichever the page sees first.
    deliveries = page.text[page.text.index('id="callback-deliveries"') :]
    assert deliveries.count("data-delivery-id=") == 1
    assert 'data-state="pending"' in deliveries or 'data-state="gave_up"' in deliveries
    assert "hooks.example.edu" in page.text
    assert "cancelled a job" in client.get("/admin/audit").text


def test_cancel_refuses_finished_and_unknown_jobs(admin_app: ExamsApp) -> None:
    failed = fail_job(admin_app)
    client = admin_app.http
    assert login(client, "ops", OPERATOR_PASSWORD).status_code == 303
    headers = {"X-CSRF-Token": csrf_of(client), "HX-Request": "true"}
    for path in (f"/admin/jobs/{failed}/cancel/preview", f"/admin/jobs/{failed}/cancel"):
        refused = client.post(path, data={"confirm": "yes"}, headers=headers)
        assert refused.status_code == 409, path
        assert "already finished (Failed)" in refused.text
    arabic = client.post(f"/admin/jobs/{failed}/cancel/preview?lang=ar", headers=headers)
    assert arabic.status_code == 409
    assert "انتهت هذه المهمة (فشل)" in arabic.text
    unknown = client.post(f"/admin/jobs/{uuid.uuid4()}/cancel", data={"confirm": "yes"}, headers=headers)
    assert unknown.status_code == 404
    assert admin_app.status(failed)["status"] == "failed"
    assert audit_entries(admin_app, "jobs.cancel") == []


def test_the_jobs_list_offers_cancel_to_operators_and_filters_cancelled_jobs(admin_app: ExamsApp) -> None:
    pending = store_job(admin_app)
    running = store_job(admin_app, status="processing", current_step="processing_answers", heartbeat_at=utcnow())
    client = admin_app.http
    assert login(client, "ops", OPERATOR_PASSWORD).status_code == 303
    rows = client.get("/admin/jobs?lang=en").text
    assert rows.count('data-action="cancel-job"') == 2
    assert '<option value="cancelled"' in rows
    headers = {"X-CSRF-Token": csrf_of(client, "/admin/jobs"), "HX-Request": "true"}
    confirm = client.post(f"/admin/jobs/{running}/cancel/preview", headers=headers)
    assert confirm.status_code == 200
    assert client.post(f"/admin/jobs/{running}/cancel", data={"confirm": "yes"}, headers=headers).status_code == 200
    cancelled = client.get("/admin/jobs?status=cancelled&lang=en").text
    assert f'data-job-id="{running}" data-status="cancelled"' in cancelled
    assert 'class="status status--cancelled"' in cancelled
    assert pending not in cancelled
    # Stopped in the step it was in, with its progress kept; a retry resumes there.
    assert ">Processing answers<" in cancelled
    live = client.get(f"/admin/jobs/{running}/live")
    assert live.status_code == 286  # finished: htmx stops polling
    overview = client.get("/admin?lang=en").text
    assert 'data-status="cancelled"' in overview  # its own card among the counts by status


def test_operator_retries_a_cancelled_job_and_it_completes(admin_app: ExamsApp) -> None:
    job_id = store_job(admin_app)
    client = admin_app.http
    assert login(client, "ops", OPERATOR_PASSWORD).status_code == 303
    headers = {"X-CSRF-Token": csrf_of(client, f"/admin/jobs/{job_id}"), "HX-Request": "true"}
    assert client.post(f"/admin/jobs/{job_id}/cancel", data={"confirm": "yes"}, headers=headers).status_code == 200
    preview = client.post(
        "/admin/actions/preview", data={"action": "retry", "scope": "job", "job_id": job_id}, headers=headers
    )
    assert preview.status_code == 200
    assert "Jobs to queue again: 1" in preview.text
    frozen = re.search(r'name="failed_before" value="([^"]+)"', preview.text)
    assert frozen
    run_retry = client.post(
        "/admin/actions/run",
        data={"action": "retry", "scope": "job", "job_id": job_id, "expected": "1", "failed_before": frozen.group(1)},
        headers=headers,
    )
    assert run_retry.status_code == 200
    final, _ = admin_app.wait_final(job_id, timeout=60)
    assert final["status"] == "completed"
    retries = audit_entries(admin_app, "jobs.retry")
    assert len(retries) == 1
    assert retries[0].count == 1


def test_a_viewer_sees_no_cancel_control_and_is_refused(admin_app: ExamsApp) -> None:
    job_id = store_job(admin_app)
    client = admin_app.http
    assert login(client, "vera", VIEWER_PASSWORD).status_code == 303
    jobs_page = client.get("/admin/jobs")
    assert job_id in jobs_page.text
    assert "cancel-job" not in jobs_page.text
    assert "/cancel/preview" not in jobs_page.text
    job_page = client.get(f"/admin/jobs/{job_id}")
    assert "cancel-job" not in job_page.text
    token = CSRF.search(job_page.text).group(1)  # type: ignore[union-attr]  (the logout form's)
    for path in (f"/admin/jobs/{job_id}/cancel/preview", f"/admin/jobs/{job_id}/cancel"):
        refused = client.post(path, data={"confirm": "yes", "_csrf": token})
        assert refused.status_code == 403, path
        assert "viewer" in refused.text
    assert admin_app.status(job_id)["status"] == "pending"
    assert audit_entries(admin_app, "jobs.cancel") == []
