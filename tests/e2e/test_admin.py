"""The dashboard in a real browser (Debian's Chromium via Playwright) against a real ``exams serve``.

Log in; a job's progress bar reaches 100 % without a reload; a job failed by the fake AI (always
500) shows up in its failure group, is retried from the page and completes; a cleanup is
previewed then run; a running job is cancelled from the jobs list after confirming; the Arabic
pages are right-to-left. Screenshots of every page go to
``test-output/admin/`` (looked at by a person, and copied to ``docs/images/`` for the tour).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from core.db import Database
from core.settings import load_settings
from jobs.models import ExamProcessingJob, utcnow
from support import MATH_ANSWERS, NO_ENV_FILE, ExamsServer, FakeAIProcess

pytestmark = pytest.mark.browser

SHOTS = Path(__file__).resolve().parents[2] / "test-output" / "admin"
PASSWORD = "e2e-operator-password"


def shot(page: Page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True, animations="disabled")


@pytest.fixture
def admin_server(make_server: Callable[..., ExamsServer], fake_ai_http: FakeAIProcess) -> ExamsServer:
    fake_ai_http.set_mode("ok", latency=3.0)
    return make_server(
        ADMIN_USERNAME="ops",
        ADMIN_PASSWORD=PASSWORD,
        SECRET_KEY="e2e-secret-key-0123456789",
        AI_API_TIMEOUT="30",
        JOB_STALE_AFTER="60",
        JOB_MAX_RETRIES="0",
        ADMIN_RETRY_RATE="20",
    )


def log_in(page: Page, server: ExamsServer, lang: str = "en") -> None:
    page.goto(f"{server.base_url}/admin?lang={lang}")
    expect(page).to_have_url(f"{server.base_url}/admin/login?next=%2Fadmin%3Flang%3D{lang}")
    page.fill("#username", "ops")
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    expect(page.locator("h1")).to_be_visible()
    assert "/admin/login" not in page.url


def test_log_in_and_watch_a_job_reach_100_percent_without_reload(page: Page, admin_server: ExamsServer) -> None:
    page.goto(f"{admin_server.base_url}/admin/login")
    shot(page, "login")
    log_in(page, admin_server)
    job_id = admin_server.submitted()
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    page.goto(f"{admin_server.base_url}/admin/jobs")
    page.evaluate("window.__sameDocument = true")
    bar = page.locator(f"tr[data-job-id='{job_id}'] [role=progressbar]")
    expect(bar).to_be_visible()
    seen: set[str] = set()
    for _ in range(200):
        value = bar.get_attribute("aria-valuenow") or "0"
        seen.add(value)
        if value == "100":
            break
        page.wait_for_timeout(250)
    assert "100" in seen, seen
    assert len(seen) >= 2, f"the bar never moved: {seen}"
    assert page.evaluate("window.__sameDocument") is True  # no reload happened
    # Pushed by the server (one server-sent-events stream), not polled.
    assert [url for url in requests if "/admin/jobs/events" in url], requests
    assert not [url for url in requests if "/admin/jobs/rows" in url], requests
    expect(page.locator(f"tr[data-job-id='{job_id}'] .status--completed")).to_be_visible()
    shot(page, "jobs")
    page.goto(f"{admin_server.base_url}/admin/jobs/{job_id}")
    expect(page.locator("#job-status")).to_have_text("Completed")
    shot(page, "job")
    page.goto(f"{admin_server.base_url}/admin")
    # The figures may be up to 5 s old (the monitoring snapshot's cache) and the page polls them
    # every 5 s: the count catches up within 10 s.
    expect(page.locator(".kpi--completed .kpi__value")).to_have_text("1", timeout=15_000)
    shot(page, "overview")


def test_a_job_failed_by_the_ai_is_retried_from_its_group_and_completes(
    page: Page, admin_server: ExamsServer, fake_ai_http: FakeAIProcess
) -> None:
    fake_ai_http.set_mode("error_500", latency=0.1)
    job_id = admin_server.submitted()
    final, _ = admin_server.wait_final(job_id, timeout=60)
    assert final["status"] == "failed"
    log_in(page, admin_server)
    page.goto(f"{admin_server.base_url}/admin/failed")
    group = page.locator("#failure-groups tbody tr[data-group]")
    expect(group).to_have_count(1)
    expect(group.locator(".num")).to_have_text("1")
    expect(group.locator(".cause")).to_contain_text("500")
    fake_ai_http.set_mode("ok", latency=0.1)
    group.locator("[data-action=retry-group]").click()
    expect(page.locator("#confirm")).to_contain_text("Jobs to queue again: 1")
    shot(page, "failed-confirm")
    page.click("#confirm-run")
    expect(page.locator("[data-operation-status=done]")).to_be_visible(timeout=30_000)
    done, _ = admin_server.wait_final(job_id, timeout=60)
    assert done["status"] == "completed"
    page.goto(f"{admin_server.base_url}/admin/failed")
    expect(page.locator("#failure-groups tbody tr[data-group]")).to_have_count(0)
    shot(page, "failed")
    page.goto(f"{admin_server.base_url}/admin/audit")
    expect(page.locator("#audit-log tr[data-action='jobs.retry']")).to_have_count(1)
    shot(page, "audit")


async def _old_finished_jobs(database_url: str, count: int) -> None:
    database = Database.from_settings(load_settings({"DATABASE_URL": database_url}, env_file=NO_ENV_FILE))
    try:
        async with database.transaction() as session:
            long_ago = utcnow() - timedelta(days=30)
            for i in range(count):
                session.add(
                    ExamProcessingJob(
                        exam_code="MATH-101",
                        student_id=f"old-{i}",
                        answers=dict(MATH_ANSWERS),
                        status="completed",
                        current_step="completed",
                        progress=100,
                        completed_at=long_ago,
                        created_at=long_ago,
                        result={"score": 1},
                    )
                )
    finally:
        await database.dispose()


def test_cleanup_preview_then_run(page: Page, admin_server: ExamsServer) -> None:
    # Playwright's sync API keeps an event loop running in this thread: insert from another one.
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, _old_finished_jobs(admin_server.env["DATABASE_URL"], 3)).result()
    log_in(page, admin_server)
    page.goto(f"{admin_server.base_url}/admin/cleanup")
    page.click("#cleanup-preview")
    expect(page.locator("#cleanup-count")).to_have_attribute("data-count", "3")
    shot(page, "cleanup-preview")
    page.click("#cleanup-run")
    expect(page.locator("[data-operation-status=done]")).to_contain_text("finished jobs deleted: 3", timeout=30_000)
    page.goto(f"{admin_server.base_url}/admin/cleanup")
    # The operator's run (the embedded scheduler records its own runs in the same table).
    expect(page.locator("#cleanup-runs tbody tr", has_text="ops").first).to_contain_text("3")
    shot(page, "cleanup")


def test_a_running_job_is_cancelled_from_the_jobs_list(
    page: Page, admin_server: ExamsServer, fake_ai_http: FakeAIProcess
) -> None:
    fake_ai_http.set_mode("ok", latency=20.0)  # the job waits for the AI long enough to be cancelled
    job_id = admin_server.submitted()
    log_in(page, admin_server)
    page.goto(f"{admin_server.base_url}/admin/jobs")
    row = page.locator(f"tr[data-job-id='{job_id}']")
    expect(row).to_have_attribute("data-status", "processing", timeout=15_000)
    row.locator("[data-action=cancel-job]").click()
    expect(page.locator("#confirm[data-confirm=cancel]")).to_contain_text("Cancel this job?")
    shot(page, "cancel-confirm")
    page.click("#confirm-cancel")
    expect(page.locator("#dialog")).to_contain_text("Job cancelled")
    # The server pushes the live rows again within about a second; the worker stops within 2 s.
    expect(row.locator(".status--cancelled")).to_be_visible(timeout=10_000)
    assert admin_server.status(job_id)["status"] == "cancelled"
    page.goto(f"{admin_server.base_url}/admin/jobs/{job_id}")
    expect(page.locator("#job-status")).to_have_text("Cancelled")
    expect(page.locator("#retry-job")).to_be_visible()
    shot(page, "job-cancelled")


def test_the_arabic_pages_are_right_to_left(page: Page, admin_server: ExamsServer) -> None:
    admin_server.submitted()
    log_in(page, admin_server, lang="ar")
    for path, name in (
        ("/admin", "overview"),
        ("/admin/jobs", "jobs"),
        ("/admin/failed", "failed"),
        ("/admin/cleanup", "cleanup"),
        ("/admin/audit", "audit"),
    ):
        page.goto(f"{admin_server.base_url}{path}")
        html = page.locator("html")
        expect(html).to_have_attribute("dir", "rtl")
        expect(html).to_have_attribute("lang", "ar")
        nav = page.locator(".sidenav").bounding_box()
        main = page.locator("#main").bounding_box()
        assert nav is not None
        assert main is not None
        assert nav["x"] > main["x"], "the side navigation must be on the right in Arabic"
        shot(page, f"{name}-ar")
    page.click(".lang-switch__link[lang=en]")
    expect(page.locator("html")).to_have_attribute("dir", "ltr")
