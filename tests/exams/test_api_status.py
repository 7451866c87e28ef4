"""HTTP feature tests of ``GET /api/exam-results/status/{job_id}`` (SPEC.md), in process.

Headers through a job's life (``Cache-Control``, ``Retry-After``), localised step labels with
unchanged machine fields, ``result``/``error_message`` only when final, and 404 problems.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from i18n import gettext
from support import SPEC_STEP_ORDER, ExamsApp, FakeAIProcess

STATUS = "/api/exam-results/status"
PROBLEM = "application/problem+json"
ARABIC = re.compile("[\u0600-\u06ff]")
TERMINAL = ("completed", "failed")
SPEC_ORDER = list(SPEC_STEP_ORDER)


def get_status(server: ExamsApp, job_id: str, lang: str | None = None, **headers: str) -> httpx.Response:
    params = {"lang": lang} if lang else None
    return server.http.get(f"{STATUS}/{job_id}", params=params, headers=headers)


def poll_with_headers(server: ExamsApp, job_id: str, timeout: float = 60.0) -> list[tuple[str, httpx.Response]]:
    """Poll (alternating English and Arabic) until the job is final; every (lang, response)."""
    seen: list[tuple[str, httpx.Response]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lang = ("en", "ar")[len(seen) % 2]
        response = get_status(server, job_id, lang)
        assert response.status_code == 200, response.text
        seen.append((lang, response))
        if response.json()["status"] in TERMINAL:
            return seen
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} not final after {timeout} s")


def test_headers_labels_and_nulls_through_the_life_of_a_job(
    make_app: Callable[..., ExamsApp], slow_ai: FakeAIProcess
) -> None:
    server = make_app()
    job_id = server.submitted()

    seen = poll_with_headers(server, job_id)

    final_lang, final_response = seen[-1]
    running = seen[:-1]
    assert running, "the job was never seen before it finished"
    assert {r.json()["status"] for _, r in running} <= {"pending", "processing"}
    assert "getting_ai_recommendations" in {r.json()["current_step"] for _, r in running}
    for lang, response in seen:
        doc = response.json()
        assert response.headers["cache-control"] == "no-store", response.headers
        assert response.headers["content-language"] == lang
        assert response.headers["content-type"].split(";")[0] == "application/json"
        assert doc["current_step"] in SPEC_ORDER, doc
        assert doc["current_step_label"] == gettext(f"step.{doc['current_step']}", lang)
        assert bool(ARABIC.search(doc["current_step_label"])) == (lang == "ar"), doc
        assert doc["job_id"] == job_id
        assert doc["status_url"] == f"{STATUS}/{job_id}"
    for _, response in running:
        doc = response.json()
        assert response.headers["retry-after"] == "2"
        assert doc["result"] is None, doc
        assert doc["error_message"] is None, doc
        assert doc["completed_at"] is None, doc
    final = final_response.json()
    assert final["status"] == "completed", final
    assert "retry-after" not in final_response.headers
    assert isinstance(final["result"], dict)
    assert final["error_message"] is None
    assert final["completed_at"] is not None
    assert final["current_step_label"] == gettext("step.completed", final_lang)


def test_finished_job_has_no_retry_after_and_never_caches(app_session: ExamsApp) -> None:
    job_id = app_session.submitted()
    app_session.wait_final(job_id)

    for _ in range(2):
        response = get_status(app_session, job_id)
        assert response.status_code == 200
        assert response.headers["cache-control"] == "no-store"
        assert "retry-after" not in response.headers
        assert "etag" not in response.headers
        assert "last-modified" not in response.headers


def test_arabic_changes_only_the_step_label(app_session: ExamsApp) -> None:
    job_id = app_session.submitted()
    app_session.wait_final(job_id)

    english = get_status(app_session, job_id).json()
    by_header = get_status(app_session, job_id, **{"Accept-Language": "ar"})
    by_query = get_status(app_session, job_id, "ar")
    by_quality = get_status(app_session, job_id, **{"Accept-Language": "fr, ar;q=0.5"})
    fallback = get_status(app_session, job_id, **{"Accept-Language": "de"})

    for response in (by_header, by_query, by_quality):
        assert response.headers["content-language"] == "ar"
        arabic = response.json()
        assert arabic["current_step_label"] == gettext("step.completed", "ar") != english["current_step_label"]
        assert {k: v for k, v in arabic.items() if k != "current_step_label"} == {
            k: v for k, v in english.items() if k != "current_step_label"
        }
    assert english["current_step_label"] == "Completed"
    assert fallback.headers["content-language"] == "en"
    assert fallback.json() == english


def test_status_of_an_uppercase_job_id_is_the_same_job(app_each_database: ExamsApp) -> None:
    # The id column is stored differently by SQLite and PostgreSQL: both find the job.
    job_id = app_each_database.submitted()
    response = get_status(app_each_database, job_id.upper())
    assert response.status_code == 200, response.text
    assert response.json()["job_id"] == job_id


NOT_FOUND_IDS = [
    str(uuid.uuid4()),
    "00000000-0000-0000-0000-000000000000",
    "nope",
    "12345",
    "6f1c",
    str(uuid.uuid4())[:-1] + "g",
    "x" * 5000,
    "%3Cscript%3Ealert(1)%3C%2Fscript%3E",
    "%D9%85%D9%87%D9%85%D8%A9",
    "'%20OR%201=1--",
]


@pytest.mark.parametrize("job_id", NOT_FOUND_IDS, ids=range(len(NOT_FOUND_IDS)))
def test_unknown_or_malformed_job_id_is_404_problem(app_session: ExamsApp, job_id: str) -> None:
    response = get_status(app_session, job_id)

    assert response.status_code == 404, response.text
    assert response.headers["content-type"].split(";")[0] == PROBLEM
    assert response.headers["cache-control"] == "no-store"
    doc: dict[str, Any] = response.json()
    assert (doc["type"], doc["status"], doc["title"]) == ("/problems/not-found", 404, "Not found")
    assert isinstance(doc["detail"], str)
    assert doc["detail"]
    assert "retry-after" not in response.headers


def test_404_problem_in_arabic_keeps_its_type(app_session: ExamsApp) -> None:
    job_id = str(uuid.uuid4())
    english = get_status(app_session, job_id).json()
    response = get_status(app_session, job_id, "ar")

    assert response.status_code == 404
    assert response.headers["content-language"] == "ar"
    arabic = response.json()
    assert arabic["type"] == english["type"] == "/problems/not-found"
    assert arabic["title"] == gettext("problem.not_found.title", "ar")
    assert arabic["detail"] == gettext("problem.not_found.job", "ar", job_id=job_id)
    assert english["detail"] == gettext("problem.not_found.job", "en", job_id=job_id)
    assert arabic["detail"] != english["detail"]
