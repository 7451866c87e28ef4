"""The student page in a real browser: pick an exam, answer, submit, follow the progress, read the result."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, Request, expect

from i18n import gettext
from support import ExamsServer, FakeAIProcess

pytestmark = pytest.mark.browser

#: Longer than the 2 s poll interval, so at least one poll lands inside the AI step.
AI_LATENCY = 4.0
RESULT_TIMEOUT_MS = 60_000
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")

# Records every progress-bar update (value and step label) from the moment the page loads.
RECORD_PROGRESS = """
document.addEventListener("DOMContentLoaded", () => {
  window.__progress = [];
  const bar = document.getElementById("progress-bar");
  new MutationObserver(() => window.__progress.push({
    value: Number(bar.getAttribute("aria-valuenow")),
    label: document.getElementById("progress-step").textContent,
  })).observe(bar, { attributes: true, attributeFilter: ["aria-valuenow"] });
});
"""


@pytest.fixture
def slow_server(make_server: Callable[..., ExamsServer], fake_ai_http: FakeAIProcess) -> ExamsServer:
    """A server whose AI answers after a few seconds, so the progress bar visibly moves."""
    fake_ai_http.set_mode("ok", latency=AI_LATENCY)
    # A loaded CI machine must not make the reconciler think the waiting job stalled.
    return make_server(AI_API_TIMEOUT="30", JOB_STALE_AFTER="60")


def open_exam(page: Page, server: ExamsServer, lang: str, code: str = "MATH-101") -> None:
    page.goto(f"{server.base_url}/?lang={lang}")
    page.locator(f".exam-card[data-code='{code}']").click()
    expect(page.locator("#stage-answer")).to_be_visible()
    expect(page.locator("#question-q1")).to_be_visible()


def answer_math(page: Page, short_text: str = "photosynthesis") -> None:
    """Answer every MATH-101 question correctly."""
    page.locator("#question-q1 input[value='b']").check()
    page.locator("#question-q2 input[value='a']").check()
    page.locator("#question-q2 input[value='c']").check()
    page.locator("#question-q3 input").fill("3.14")
    page.locator("#question-q4 input[value='true']").check()
    page.locator("#question-q5 input").fill(short_text)
    page.locator("#question-q6 input").fill("5")
    page.locator("#question-q7 input").fill("coefficient")


def wait_result(page: Page) -> None:
    """Wait for the job's end; a failed job fails the test with its error message."""
    page.locator("#stage-result:not([hidden]), #stage-failed:not([hidden])").wait_for(timeout=RESULT_TIMEOUT_MS)
    failed = page.locator("#stage-failed")
    assert failed.is_hidden(), f"the job failed: {page.locator('#failed-message').text_content()}"


def progress_updates(page: Page) -> list[dict[str, Any]]:
    return list(page.evaluate("window.__progress"))


def screenshot(page: Page, path: Path) -> None:
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(path), full_page=True, animations="disabled")
    assert path.stat().st_size > 10_000


def test_english_flow_from_exam_to_result(page: Page, slow_server: ExamsServer, tmp_path: Path) -> None:
    page.add_init_script(RECORD_PROGRESS)
    posts: list[Request] = []
    page.on("request", lambda r: posts.append(r) if r.method == "POST" else None)
    page.goto(f"{slow_server.base_url}/")
    assert page.locator("html").get_attribute("lang") == "en"
    assert page.locator("html").get_attribute("dir") == "ltr"
    expect(page.locator("h1")).to_have_text(gettext("page.title", "en"))

    card = page.locator(".exam-card[data-code='MATH-101']")
    expect(card).to_contain_text("Algebra basics")
    expect(card).to_contain_text(gettext("page.exams.open", "en"))
    card.click()

    # One input kind per question type, with prompt, topic and points.
    expect(page.locator("#question-q1 input[type=radio]")).to_have_count(3)
    expect(page.locator("#question-q2 input[type=checkbox]")).to_have_count(3)
    assert page.locator("#question-q3 input[type=number]").get_attribute("step") == "0.01"
    assert page.locator("#question-q6 input[type=number]").get_attribute("step") == "any"
    expect(page.locator("#question-q4 input[type=radio]")).to_have_count(2)
    expect(page.locator("#question-q4")).to_contain_text(gettext("page.form.true", "en"))
    expect(page.locator("#question-q5 input[type=text]")).to_have_count(1)
    expect(page.locator("#question-q1 .question__prompt")).to_contain_text("Solve 2x + 3 = 11")
    expect(page.locator("#question-q1")).to_contain_text("Topic: Algebra")
    expect(page.locator("#question-q2")).to_contain_text("Points: 2")

    page.locator("#student-id").fill("s-1042")
    answer_math(page)
    expect(page.locator("#answered-count")).to_have_text("Answered 7 of 7")
    page.locator("#submit-btn").dblclick()

    bar = page.locator("#progress-bar")
    expect(page.get_by_role("progressbar")).to_be_visible()
    expect(page.locator("#stage-progress")).to_be_visible()
    assert bar.get_attribute("aria-valuemin") == "0"
    assert bar.get_attribute("aria-valuemax") == "100"
    wait_result(page)

    # A double click makes one submission: one Idempotency-Key, one job.
    submits = [r for r in posts if r.url.endswith("/api/exam-results/process?lang=en")]
    keys = {r.headers.get("idempotency-key") for r in submits}
    assert len(keys) == 1, keys
    assert UUID_RE.match(str(next(iter(keys)))), keys
    responses = [r.response() for r in submits]
    job_ids = {response.json()["job_id"] for response in responses if response is not None}
    assert len(job_ids) == 1

    updates = progress_updates(page)
    values = [u["value"] for u in updates]
    assert values == sorted(values), values
    assert values[0] < 100, values
    assert values[-1] == 100, values
    assert any(0 < v < 100 for v in values), values
    labels = {u["label"] for u in updates}
    assert gettext("step.getting_ai_recommendations", "en") in labels, labels
    assert bar.get_attribute("aria-valuenow") == "100"

    verdict = page.locator("#result-verdict")
    expect(verdict).to_have_text(gettext("page.result.passed", "en"))
    assert verdict.get_attribute("data-passed") == "true"
    expect(page.locator("#result-score")).to_have_text("8 / 8")
    expect(page.locator("#result-percentage")).to_have_text("100%")
    expect(page.locator(".question-result")).to_have_count(7)
    expect(page.locator(".question-result[data-correct='true']")).to_have_count(7)
    expect(page.locator(".topic")).to_have_count(3)
    expect(page.locator(".recommendation").first).to_be_visible()
    expect(page.locator(".recommendation .badge").first).to_contain_text("priority")
    expect(page.locator("[data-source='ai']")).to_have_text(gettext("page.result.source.ai", "en"))
    assert f"job={next(iter(job_ids))}" in page.url
    screenshot(page, tmp_path / "student-en-result.png")


def test_arabic_page_is_right_to_left_and_localised(page: Page, slow_server: ExamsServer, tmp_path: Path) -> None:
    page.add_init_script(RECORD_PROGRESS)
    page.goto(f"{slow_server.base_url}/?lang=ar")
    assert page.locator("html").get_attribute("lang") == "ar"
    assert page.locator("html").get_attribute("dir") == "rtl"
    assert page.evaluate("getComputedStyle(document.body).direction") == "rtl"
    expect(page.locator("h1")).to_have_text(gettext("page.title", "ar"))
    expect(page.locator(".lang-switch__link[aria-current='true']")).to_have_text("العربية")
    # Right to left: the brand (first in the top bar) sits to the right of the language switch.
    brand, switch = page.locator(".brand").bounding_box(), page.locator(".lang-switch").bounding_box()
    assert brand is not None
    assert switch is not None
    assert brand["x"] > switch["x"]

    card = page.locator(".exam-card[data-code='MATH-101']")
    expect(card.locator(".exam-card__title")).to_have_text("أساسيات الجبر")
    expect(page.locator(".exam-card[data-code='HIST-100']")).to_contain_text(gettext("page.exams.closed", "ar"))
    card.click()
    expect(page.locator("#question-q1 .question__prompt")).to_contain_text("حُلَّ المعادلة")
    expect(page.locator("#question-q4")).to_contain_text("صواب")
    expect(page.locator("label[for='student-id']")).to_have_text(gettext("page.form.student_id", "ar"))
    expect(page.locator("#submit-btn")).to_contain_text(gettext("page.form.submit", "ar"))

    page.locator("#student-id").fill("s-2001")
    answer_math(page, short_text="التمثيل الضوئي")
    page.locator("#submit-btn").click()
    expect(page.locator("#stage-progress")).to_be_visible()
    expect(page.locator("#progress-step")).to_have_text(
        gettext("step.getting_ai_recommendations", "ar"), timeout=RESULT_TIMEOUT_MS
    )
    screenshot(page, tmp_path / "student-ar-progress.png")
    wait_result(page)

    labels = {u["label"] for u in progress_updates(page)}
    assert gettext("step.getting_ai_recommendations", "ar") in labels, labels
    expect(page.locator("#result-verdict")).to_have_text(gettext("page.result.passed", "ar"))
    expect(page.locator("#result-score")).to_have_text("8 / 8")
    expect(page.locator(".question-result[data-correct='true']")).to_have_count(7)
    expect(page.locator(".recommendation .badge").first).to_contain_text("أولوية")
    expect(page.locator("#result-topics")).to_have_text(gettext("page.result.topics", "ar"))
    screenshot(page, tmp_path / "student-ar-result.png")

    # Switching language keeps the job: the same result, now in English.
    page.locator(".lang-switch__link[data-lang='en']").click()
    expect(page.locator("html")).to_have_attribute("dir", "ltr")
    wait_result(page)
    expect(page.locator("#result-verdict")).to_have_text(gettext("page.result.passed", "en"))


def test_validation_errors_show_next_to_their_fields(page: Page, server_session: ExamsServer) -> None:
    server = server_session
    open_exam(page, server, "ar")
    student_error = page.locator("[id='student_id-error']")
    q5_error = page.locator("[id='answers.q5-error']")

    # A number the browser cannot parse is caught before anything is sent.
    page.locator("#question-q3 input").press_sequentially("1e")
    page.locator("#submit-btn").click()
    expect(page.locator("[id='answers.q3-error']")).to_have_text(gettext("page.form.bad_number", "ar"))
    page.locator("#question-q3 input").fill("3.14")

    # The server's 422: the empty student id, in Arabic, next to its field, with the problem detail.
    page.locator("#question-q5 input").fill("x" * 1001)
    page.locator("#submit-btn").click()
    expect(student_error).to_have_text(gettext("validation.required", "ar"))
    expect(page.locator("#student-id")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#form-error")).to_contain_text(gettext("problem.validation.detail", "ar", count=1))
    expect(page.locator("[id='answers.q3-error']")).to_be_hidden()

    # Then the answer that is too long, next to its question (errors[].field = answers.q5).
    page.locator("#student-id").fill("s-3003")
    page.locator("#submit-btn").click()
    expect(q5_error).to_have_text(gettext("validation.too_long", "ar", max=1000))
    expect(page.locator("#question-q5")).to_have_class(re.compile(r"\bhas-error\b"))
    expect(student_error).to_be_hidden()

    page.locator("#question-q5 input").fill("التمثيل الضوئي")
    page.locator("#submit-btn").click()
    expect(page.locator("#stage-progress")).to_be_visible()
    expect(page.locator("#form-error")).to_be_hidden()


def test_closed_exam_cannot_be_selected(page: Page, server_session: ExamsServer) -> None:
    server = server_session
    page.goto(f"{server.base_url}/?lang=en")
    closed = page.locator(".exam-card[data-code='HIST-100']")
    expect(closed).to_be_disabled()
    expect(closed).to_contain_text(gettext("page.exams.closed", "en"))
    expect(closed).to_contain_text(gettext("page.exams.closed_hint", "en"))
    closed.click(force=True)
    expect(page.locator("#stage-choose")).to_be_visible()
    expect(page.locator("#stage-answer")).to_be_hidden()

    # Not through the address bar either.
    page.goto(f"{server.base_url}/?lang=en&exam=HIST-100")
    expect(page.locator("#problem")).to_contain_text(gettext("page.exams.closed_hint", "en"))
    expect(page.locator("#stage-answer")).to_be_hidden()


def test_a_cancelled_job_stops_the_progress_and_says_so(page: Page, slow_server: ExamsServer) -> None:
    open_exam(page, slow_server, "ar")
    page.locator("#student-id").fill("s-cancel")
    answer_math(page)
    with page.expect_response(lambda r: r.url.split("?")[0].endswith("/api/exam-results/process")) as submitted:
        page.locator("#submit-btn").click()
    job_id = submitted.value.json()["job_id"]
    expect(page.locator("#stage-progress")).to_be_visible()

    cancelled = httpx.post(f"{slow_server.base_url}/api/exam-results/status/{job_id}/cancel", timeout=10)
    assert cancelled.status_code == 200, cancelled.text

    expect(page.locator("#stage-failed")).to_be_visible()
    expect(page.locator("#failed-heading")).to_have_text(gettext("page.cancelled.heading", "ar"))
    expect(page.locator("#failed-hint")).to_have_text(gettext("page.cancelled.hint", "ar"))
    expect(page.locator("#failed-message")).to_have_text(gettext("step.cancelled", "ar"))
    # Polling stopped: no status request after the cancelled one was shown.
    polls: list[str] = []
    page.on("request", lambda r: polls.append(r.url) if "/status/" in r.url else None)
    page.wait_for_timeout(2_500)
    assert polls == [], polls


def test_with_api_tokens_the_page_uses_its_own_session_token(
    page: Page, make_server: Callable[..., ExamsServer], fake_ai_http: FakeAIProcess
) -> None:
    """``API_AUTH=tokens``: the page sends its short-lived page token on every API call and the
    flow works; a token the server no longer accepts shows the session-expired message."""
    fake_ai_http.set_mode("ok", latency=0.5)
    server = make_server(API_AUTH="tokens", SECRET_KEY="browser-test-secret-0123456789abcdef")
    api_calls: list[Request] = []
    page.on("request", lambda r: api_calls.append(r) if "/api/exam-results" in r.url else None)
    open_exam(page, server, "en")
    page.locator("#student-id").fill("s-3003")
    answer_math(page)
    page.locator("#submit-btn").click()
    wait_result(page)
    assert api_calls, "the page called no exam-results route"
    for call in api_calls:
        assert (call.headers.get("authorization") or "").startswith("Bearer "), call.url
    # Without the page's token the same API refuses (the page is not let in by its cookie alone).
    job_path = next(c.url for c in api_calls if "/status/" in c.url).split(server.base_url, 1)[1].split("/events")[0]
    assert httpx.get(f"{server.base_url}{job_path}").status_code == 401

    # The page's session is gone (as after its expiry): the next submit says so, in words.
    page.route(
        "**/api/exam-results/process?*",
        lambda route: route.continue_(headers={**route.request.headers, "authorization": "Bearer expired-page-token"}),
    )
    open_exam(page, server, "en")
    page.locator("#student-id").fill("s-3004")
    answer_math(page)
    page.locator("#submit-btn").click()
    expect(page.locator("#form-error")).to_contain_text(gettext("page.error.session_expired", "en"))
