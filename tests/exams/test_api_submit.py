"""HTTP feature tests of ``POST /api/exam-results/process`` (SPEC.md), in process (``create_app``, embedded worker).

Covers the 202 contract, the full flow to ``completed``, the result against the pure grader,
every error path as a problem document (in English and Arabic), hostile input and
``Idempotency-Key``.
"""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import httpx
import pytest

from exams.catalog import load_catalog_file
from exams.definitions import ExamDefinition
from exams.grading import grade
from i18n import gettext
from support import MATH_ANSWERS, SAMPLE_CATALOG, STATUS_FIELDS, ExamsApp, FakeAIProcess

PROCESS = "/api/exam-results/process"
STATUS = "/api/exam-results/status"
PROBLEM = "application/problem+json"
ARABIC = re.compile("[\u0600-\u06ff]")
MIB = 1024 * 1024
#: The status document's fields (SPEC.md, GET /api/exam-results/status/{job_id}).
#: SPEC.md's pipeline table: step -> (lowest, highest) progress while in it, in order.
SPEC_STEPS: dict[str, tuple[int, int]] = {
    "queued": (0, 0),
    "validating_exam": (0, 5),
    "processing_answers": (5, 20),
    "getting_ai_recommendations": (20, 90),
    "finalizing_results": (90, 100),
    "completed": (100, 100),
}
SPEC_ORDER = list(SPEC_STEPS)


# --- helpers -------------------------------------------------------------------------------


def post_raw(
    server: ExamsApp,
    content: bytes | str,
    headers: dict[str, str] | None = None,
    params: dict[str, str] | None = None,
) -> httpx.Response:
    """POST ``content`` as is (so malformed bodies reach the app untouched)."""
    return server.http.post(
        PROCESS,
        content=content.encode() if isinstance(content, str) else content,
        headers={"Content-Type": "application/json", **(headers or {})},
        params=params,
    )


def post_json(
    server: ExamsApp, body: Any, headers: dict[str, str] | None = None, params: dict[str, str] | None = None
) -> httpx.Response:
    return post_raw(server, json.dumps(body), headers, params)


def submission(answers: dict[str, Any] | None = None, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "exam_code": "MATH-101",
        "student_id": "s-1042",
        "answers": dict(MATH_ANSWERS if answers is None else answers),
    }
    body.update(overrides)
    return body


def assert_problem(response: httpx.Response, status: int, type_: str | None = None) -> dict[str, Any]:
    """The response is an RFC 9457 problem document with ``status`` (and ``type``)."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].split(";")[0] == PROBLEM, response.headers
    doc = response.json()
    assert isinstance(doc, dict)
    assert {"type", "title", "status", "detail"} <= set(doc), doc
    assert doc["status"] == status
    for field in ("type", "title", "detail"):
        assert isinstance(doc[field], str), doc
        assert doc[field].strip(), doc
    if type_ is not None:
        assert doc["type"] == type_, doc
    return doc


def field_errors(doc: dict[str, Any]) -> dict[str, str]:
    errors = doc["errors"]
    assert isinstance(errors, list), doc
    assert errors, doc
    assert all(set(item) == {"field", "message"} for item in errors), errors
    return {item["field"]: item["message"] for item in errors}


def job_count(server: ExamsApp) -> int:
    """Rows in the app's jobs table, read straight from its database (the SQLite file, or PostgreSQL)."""
    if server.database_url.startswith("postgresql"):
        return asyncio.run(pg_job_count(server.database_url))
    path = server.database_url.split(":///", 1)[1]
    with sqlite3.connect(path, timeout=30) as conn:
        return int(conn.execute("SELECT count(*) FROM exam_processing_jobs").fetchone()[0])


async def pg_job_count(database_url: str) -> int:
    import asyncpg  # type: ignore[import-untyped]

    conn = await asyncpg.connect(database_url.replace("postgresql+asyncpg://", "postgresql://", 1), timeout=10)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM exam_processing_jobs"))
    finally:
        await conn.close()


def math_101() -> ExamDefinition:
    return next(exam for exam in load_catalog_file(SAMPLE_CATALOG) if exam.code == "MATH-101")


def assert_server_alive(server: ExamsApp) -> None:
    assert server.http.get("/health").status_code == 200


@pytest.fixture
def slow_ai(fake_ai_http: FakeAIProcess) -> Iterator[FakeAIProcess]:
    """The fake AI answering after 1.5 s (so every step is observable), reset afterwards."""
    fake_ai_http.set_mode("ok", latency=1.5)
    yield fake_ai_http
    fake_ai_http.reset()


# --- 202 and the happy path ----------------------------------------------------------------


def test_submit_answers_202_with_pending_status_document(app_session: ExamsApp) -> None:
    response = app_session.submit()

    assert response.status_code == 202, response.text
    assert response.headers["content-type"].split(";")[0] == "application/json"
    doc = response.json()
    assert set(doc) == STATUS_FIELDS
    job_id = doc["job_id"]
    assert str(uuid.UUID(job_id)) == job_id
    assert response.headers["location"] == f"{STATUS}/{job_id}"
    assert response.headers["retry-after"] == "2"
    assert response.headers["content-language"] == "en"
    assert doc["status_url"] == f"{STATUS}/{job_id}"
    assert (doc["status"], doc["progress"], doc["current_step"]) == ("pending", 0, "queued")
    assert doc["current_step_label"] == "Queued"
    assert (doc["exam_code"], doc["student_id"]) == ("MATH-101", "s-1042")
    assert type(doc["progress"]) is int
    assert type(doc["attempts"]) is int
    assert doc["attempts"] == 0
    assert doc["result"] is None
    assert doc["error_message"] is None
    assert doc["started_at"] is None
    assert doc["completed_at"] is None
    created = datetime.fromisoformat(doc["created_at"])
    assert created.tzinfo is not None


def test_full_flow_until_completed_moves_forward_in_spec_order(
    make_app: Callable[..., ExamsApp], slow_ai: FakeAIProcess
) -> None:
    server = make_app()
    response = server.submit()
    assert response.status_code == 202, response.text

    final, seen = server.wait_final(response.json()["job_id"])

    assert final["status"] == "completed", final
    assert (final["progress"], final["current_step"], final["attempts"]) == (100, "completed", 1)
    assert final["error_message"] is None
    assert isinstance(final["result"], dict)
    assert final["started_at"] is not None
    assert final["completed_at"] is not None
    progresses = [doc["progress"] for doc in seen]
    assert progresses == sorted(progresses), progresses
    steps = [SPEC_ORDER.index(doc["current_step"]) for doc in seen]
    assert steps == sorted(steps), [doc["current_step"] for doc in seen]
    for doc in seen:
        low, high = SPEC_STEPS[doc["current_step"]]
        assert low <= doc["progress"] <= high, doc
        expected_status = {"queued": "pending", "completed": "completed"}.get(doc["current_step"], "processing")
        assert doc["status"] == expected_status, doc
    # The AI call takes 1.5 s: the bar keeps moving while waiting for it.
    ai_progress = {doc["progress"] for doc in seen if doc["current_step"] == "getting_ai_recommendations"}
    assert len(ai_progress) >= 2, ai_progress


def test_ai_answer_arriving_as_progress_ticks_still_completes(
    make_app: Callable[..., ExamsApp], fake_ai_http: FakeAIProcess
) -> None:
    # The AI answers after 2 s, just as the second once-a-second progress tick is saving:
    # the job must still complete (a whole number of ticks is the common case, not a corner).
    fake_ai_http.set_mode("ok", latency=2.0)
    try:
        server = make_app()
        job_ids = [server.submit().json()["job_id"] for _ in range(6)]
        finals = [server.wait_final(job_id)[0] for job_id in job_ids]
    finally:
        fake_ai_http.reset()

    failures = [(f["job_id"], f["error_message"]) for f in finals if f["status"] != "completed"]
    assert failures == []


def test_result_matches_the_pure_grader_for_known_answers(app_session: ExamsApp) -> None:
    # q2 in another order, q3 within tolerance, q4 wrong, q5 in other case and spacing,
    # q6 and q7 unanswered.
    answers: dict[str, Any] = {"q1": "b", "q2": ["c", "a"], "q3": 3.149, "q4": False, "q5": "  PhotoSynthesis "}
    response = app_session.submit(answers)
    assert response.status_code == 202, response.text

    final, _ = app_session.wait_final(response.json()["job_id"])

    assert final["status"] == "completed", final
    result = final["result"]
    expected = grade(math_101(), answers)
    assert (result["score"], result["max_score"], result["percentage"], result["passed"]) == (
        expected.score,
        expected.max_score,
        expected.percentage,
        expected.passed,
    )
    # Hand-checked too: 1 + 2 + 1 + 0 + 1 + 0 + 0 of 8 points.
    assert (result["score"], result["max_score"], result["percentage"], result["passed"]) == (5, 8, 62.5, True)
    assert result["questions"] == [
        {"question_id": q.question_id, "correct": q.correct, "awarded": q.awarded, "max": q.max}
        for q in expected.questions
    ]
    by_id = {q["question_id"]: q for q in result["questions"]}
    assert list(by_id) == ["q1", "q2", "q3", "q4", "q5", "q6", "q7"]
    for unanswered in ("q6", "q7"):
        assert (by_id[unanswered]["correct"], by_id[unanswered]["awarded"]) == (False, 0)
    assert (by_id["q4"]["correct"], by_id["q4"]["awarded"]) == (False, 0)
    assert result["topics"] == [
        {"topic": t.topic, "score": t.score, "max_score": t.max_score, "percentage": t.percentage}
        for t in expected.topics
    ]
    assert [t["topic"] for t in result["topics"]] == ["algebra", "geometry", "biology"]
    assert result["recommendations_source"] == "ai"
    assert isinstance(result["recommendations"], list)
    assert result["recommendations"]
    for item in result["recommendations"]:
        assert set(item) == {"topic", "priority", "text"}, item
        assert item["priority"] in ("high", "medium", "low")
        assert isinstance(item["text"], str)
        assert item["text"].strip()
    assert datetime.fromisoformat(result["processed_at"]).tzinfo is not None


def test_ai_disabled_gives_rule_based_recommendations_without_calling_the_ai(
    make_app: Callable[..., ExamsApp], fake_ai_http: FakeAIProcess
) -> None:
    server = make_app(AI_API_ENABLED="false")
    response = server.submit()
    assert response.status_code == 202, response.text

    final, _ = server.wait_final(response.json()["job_id"])

    assert final["status"] == "completed", final
    assert final["result"]["recommendations_source"] == "rule_based"
    assert fake_ai_http.requests() == 0
    expected = grade(math_101(), MATH_ANSWERS)
    assert (final["result"]["score"], final["result"]["max_score"]) == (expected.score, expected.max_score)


# --- error paths ---------------------------------------------------------------------------


@pytest.mark.parametrize("body", ['{"exam_code": "MATH-101",', "not json", "", '{"a": 1} trailing', "\xff\xfe"])
def test_malformed_json_is_400_problem(app_session: ExamsApp, body: str) -> None:
    before = job_count(app_session)
    doc = assert_problem(post_raw(app_session, body), 400, "/problems/malformed-json")
    assert "errors" not in doc
    assert job_count(app_session) == before


@pytest.mark.parametrize("body", [[], [submission()], "MATH-101", 42, None, True])
def test_json_that_is_not_an_object_is_422(app_session: ExamsApp, body: Any) -> None:
    doc = assert_problem(post_json(app_session, body), 422, "/problems/validation-error")
    assert field_errors(doc) == {"body": gettext("validation.not_object", "en")}


def test_missing_fields_are_each_listed(app_session: ExamsApp) -> None:
    doc = assert_problem(post_json(app_session, {}), 422, "/problems/validation-error")
    required = gettext("validation.required", "en")
    assert field_errors(doc) == {"exam_code": required, "student_id": required, "answers": required}


@pytest.mark.parametrize("missing", ["exam_code", "student_id", "answers"])
def test_each_missing_field_alone_is_422(app_session: ExamsApp, missing: str) -> None:
    body = submission()
    del body[missing]
    doc = assert_problem(post_json(app_session, body), 422, "/problems/validation-error")
    assert field_errors(doc) == {missing: gettext("validation.required", "en")}


def test_wrong_types_are_422_with_field_errors(app_session: ExamsApp) -> None:
    body = submission(exam_code=101, answers=None)
    body["answers"] = ["b", ["a", "c"]]
    doc = assert_problem(post_json(app_session, body), 422, "/problems/validation-error")
    assert field_errors(doc) == {
        "exam_code": gettext("validation.not_string", "en"),
        "answers": gettext("validation.not_object", "en"),
    }


def test_student_id_not_a_string_is_422(app_session: ExamsApp) -> None:
    doc = assert_problem(post_json(app_session, submission(student_id=1042)), 422, "/problems/validation-error")
    assert field_errors(doc) == {"student_id": gettext("validation.not_string", "en")}


def test_unknown_exam_code_is_422(app_session: ExamsApp) -> None:
    doc = assert_problem(post_json(app_session, submission(exam_code="NOPE-999")), 422, "/problems/validation-error")
    assert field_errors(doc) == {"exam_code": gettext("validation.exam_unknown", "en", code="NOPE-999")}


def test_closed_exam_accepts_no_submission(app_session: ExamsApp) -> None:
    before = job_count(app_session)
    doc = assert_problem(
        post_json(app_session, submission({"q1": "a"}, exam_code="HIST-100")), 422, "/problems/validation-error"
    )
    assert field_errors(doc) == {"exam_code": gettext("validation.exam_closed", "en", code="HIST-100")}
    assert job_count(app_session) == before


def test_unknown_question_id_is_422(app_session: ExamsApp) -> None:
    doc = assert_problem(post_json(app_session, submission({"q1": "b", "q99": "a"})), 422, "/problems/validation-error")
    assert field_errors(doc) == {
        "answers.q99": gettext("validation.unknown_question", "en", code="MATH-101", question_id="q99")
    }


@pytest.mark.parametrize(
    ("question", "value", "key"),
    [
        ("q1", 1, "validation.answer_not_string"),  # single_choice
        ("q1", ["b"], "validation.answer_not_string"),
        ("q2", "a", "validation.answer_not_string_list"),  # multiple_choice
        ("q2", ["a", 3], "validation.answer_not_string_list"),
        ("q3", "3.14", "validation.answer_not_number"),  # numeric
        ("q3", True, "validation.answer_not_number"),
        ("q3", None, "validation.answer_not_number"),
        ("q4", "true", "validation.answer_not_boolean"),  # true_false
        ("q4", 1, "validation.answer_not_boolean"),
        ("q5", 5, "validation.answer_not_string"),  # short_text
        ("q5", ["photosynthesis"], "validation.answer_not_string"),
    ],
)
def test_answer_of_the_wrong_type_is_422_naming_the_question(
    app_session: ExamsApp, question: str, value: Any, key: str
) -> None:
    before = job_count(app_session)
    doc = assert_problem(post_json(app_session, submission({question: value})), 422, "/problems/validation-error")
    assert field_errors(doc) == {f"answers.{question}": gettext(key, "en")}
    assert job_count(app_session) == before


@pytest.mark.parametrize(("question", "value"), [("q1", "z"), ("q1", "B"), ("q2", ["a", "z"])])
def test_option_not_among_the_options_is_422(app_session: ExamsApp, question: str, value: Any) -> None:
    doc = assert_problem(post_json(app_session, submission({question: value})), 422, "/problems/validation-error")
    assert doc["errors"] == [
        {"field": f"answers.{question}", "message": gettext("validation.answer_not_option", "en", options="a, b, c")}
    ]


def test_every_bad_answer_is_listed_at_once(app_session: ExamsApp) -> None:
    answers = {"q1": "z", "q2": "a", "q3": "x", "q4": 1, "q5": 3, "q9": 1}
    doc = assert_problem(post_json(app_session, submission(answers)), 422, "/problems/validation-error")
    assert sorted(field_errors(doc)) == [f"answers.q{n}" for n in (1, 2, 3, 4, 5, 9)]
    assert doc["detail"] == gettext("problem.validation.detail", "en", count=6)


def test_body_over_one_mebibyte_is_413_problem(app_session: ExamsApp) -> None:
    before = job_count(app_session)
    body = json.dumps(submission({"q5": "x" * (MIB + 10)}))
    doc = assert_problem(post_raw(app_session, body), 413, "/problems/payload-too-large")
    assert doc["detail"] == gettext("problem.too_large.detail", "en", max_bytes=MIB)
    assert job_count(app_session) == before


def test_body_over_the_limit_without_content_length_is_413(app_session: ExamsApp) -> None:
    chunks = [b'{"exam_code": "MATH-101", "student_id": "s", "answers": {"q5": "'] + [b"x" * 65536] * 17 + [b'"}}']
    response = app_session.http.post(PROCESS, content=iter(chunks), headers={"Content-Type": "application/json"})
    assert "content-length" not in response.request.headers
    assert_problem(response, 413, "/problems/payload-too-large")


def test_body_of_exactly_one_mebibyte_is_accepted(app_session: ExamsApp) -> None:
    body = json.dumps(submission()).encode()
    body += b" " * (MIB - len(body))  # JSON allows trailing whitespace
    assert len(body) == MIB
    response = post_raw(app_session, body)
    assert response.status_code == 202, response.text


HOSTILE_BODIES: dict[str, Any] = {
    "very long exam_code": submission(exam_code="A" * 100_000),
    "very long student_id": submission(student_id="s" * 100_000),
    "unicode exam_code": submission(exam_code="امتحان-١٠١-🙂"),
    "script exam_code": submission(exam_code="<script>alert(1)</script>"),
    "script question id": submission({"<script>alert(1)</script>": "b"}),
    "NUL in exam_code": submission(exam_code="MATH-101\x00"),
    "NUL in student_id": submission(student_id="s-1042\x00; DROP TABLE exam_processing_jobs"),
    "NUL in a text answer": submission({"q5": "photo\x00synthesis"}),
    "NUL in a question id": submission({"q1\x00": "b"}),
    "blank exam_code": submission(exam_code="   "),
    "blank student_id": submission(student_id=""),
    "huge number": submission({"q3": 1e308 * 10}),
    "very long text answer": submission({"q5": "p" * 5000}),
}


@pytest.mark.parametrize("name", list(HOSTILE_BODIES))
def test_hostile_input_is_a_clear_4xx_and_creates_no_job(app_session: ExamsApp, name: str) -> None:
    before = job_count(app_session)
    raw = json.dumps(HOSTILE_BODIES[name]).replace("Infinity", "1e999")
    response = post_raw(app_session, raw)
    assert 400 <= response.status_code < 500, response.text
    assert_problem(response, response.status_code)
    assert job_count(app_session) == before
    assert_server_alive(app_session)


@pytest.mark.parametrize("depth", [100, 5000, 100_000])
def test_deeply_nested_json_is_a_clear_4xx(app_session: ExamsApp, depth: int) -> None:
    before = job_count(app_session)
    raw = '{"exam_code": "MATH-101", "student_id": "s", "answers": {"q1": ' + "[" * depth + "]" * depth + "}}"
    response = post_raw(app_session, raw)
    doc = assert_problem(response, response.status_code)
    assert response.status_code in (400, 422), doc
    assert job_count(app_session) == before
    assert_server_alive(app_session)


def test_deeply_nested_json_document_is_a_clear_4xx(app_session: ExamsApp) -> None:
    response = post_raw(app_session, "[" * 200_000 + "]" * 200_000)
    doc = assert_problem(response, response.status_code)
    assert response.status_code in (400, 422), doc
    assert_server_alive(app_session)


def test_nul_characters_are_rejected_on_postgresql_too(pg_url: str, make_app: Callable[..., ExamsApp]) -> None:
    # PostgreSQL cannot store NUL in text or jsonb: the API must say 4xx, not "database down".
    server = make_app(DATABASE_URL=pg_url, AI_API_ENABLED="false")
    for name in ("NUL in exam_code", "NUL in student_id", "NUL in a text answer"):
        response = post_json(server, HOSTILE_BODIES[name])
        doc = assert_problem(response, response.status_code)
        assert response.status_code == 422, (name, doc)
    assert server.http.get("/ready").status_code == 200
    assert server.submit().status_code == 202


# --- languages -----------------------------------------------------------------------------


def _problems_in(server: ExamsApp, **request: Any) -> list[tuple[httpx.Response, dict[str, Any]]]:
    """A 400, a 422 with errors, a 404 and a 413, each asked for with ``request``'s headers/params."""
    headers = request.get("headers")
    params = request.get("params")
    answers = {"q3": "x", "q9": 1}
    return [
        (r, r.json())
        for r in (
            post_raw(server, "{oops", headers, params),
            post_json(server, submission(answers), headers, params),
            post_json(server, submission(exam_code="HIST-100"), headers, params),
            server.http.get(f"{STATUS}/{uuid.uuid4()}", headers=headers, params=params),
            post_raw(server, b"{" + b" " * (MIB + 1), headers, params),
        )
    ]


@pytest.mark.parametrize(
    "arabic",
    [
        {"headers": {"Accept-Language": "ar"}},
        {"params": {"lang": "ar"}},
        {"headers": {"Accept-Language": "fr, ar;q=0.5"}},
    ],
    ids=["header", "query", "quality"],
)
def test_problems_are_arabic_when_asked_with_the_same_type(app_session: ExamsApp, arabic: dict[str, Any]) -> None:
    english = _problems_in(app_session)
    localized = _problems_in(app_session, **arabic)

    for (en_response, en), (ar_response, ar) in zip(english, localized, strict=True):
        assert en_response.headers["content-language"] == "en"
        assert ar_response.headers["content-language"] == "ar"
        assert ar_response.status_code == en_response.status_code
        assert (ar["type"], ar["status"]) == (en["type"], en["status"])
        for field in ("title", "detail"):
            assert ar[field] != en[field], (field, ar)
            assert ARABIC.search(ar[field]), (field, ar)
            assert not ARABIC.search(en[field]), (field, en)
        if "errors" in en:
            assert [e["field"] for e in ar["errors"]] == [e["field"] for e in en["errors"]]
            for en_error, ar_error in zip(en["errors"], ar["errors"], strict=True):
                assert ar_error["message"] != en_error["message"]
                assert ARABIC.search(ar_error["message"]), ar_error
    validation = localized[1][1]
    assert field_errors(validation) == {
        "answers.q3": gettext("validation.answer_not_number", "ar"),
        "answers.q9": gettext("validation.unknown_question", "ar", code="MATH-101", question_id="q9"),
    }
    assert validation["title"] == gettext("problem.validation.title", "ar")


@pytest.mark.parametrize("accept", ["de", "fr-CH, de;q=0.8", "xx-YY", "*", "ar;q=0"])
def test_unknown_language_falls_back_to_english(app_session: ExamsApp, accept: str) -> None:
    response = post_json(app_session, {}, headers={"Accept-Language": accept})
    doc = assert_problem(response, 422, "/problems/validation-error")
    assert response.headers["content-language"] == "en"
    assert doc["title"] == gettext("problem.validation.title", "en")
    assert set(field_errors(doc).values()) == {gettext("validation.required", "en")}


def test_lang_query_wins_over_accept_language(app_session: ExamsApp) -> None:
    response = post_json(app_session, {}, headers={"Accept-Language": "ar"}, params={"lang": "en"})
    doc = assert_problem(response, 422)
    assert response.headers["content-language"] == "en"
    assert doc["title"] == gettext("problem.validation.title", "en")


def test_accepted_submission_in_arabic_keeps_machine_fields(app_session: ExamsApp) -> None:
    response = post_json(app_session, submission(), {"Accept-Language": "ar"})
    assert response.status_code == 202, response.text
    assert response.headers["content-language"] == "ar"
    doc = response.json()
    assert (doc["status"], doc["current_step"]) == ("pending", "queued")
    assert doc["current_step_label"] == gettext("step.queued", "ar")
    assert ARABIC.search(doc["current_step_label"])


# --- Idempotency-Key -----------------------------------------------------------------------

VOLATILE = {"status", "progress", "current_step", "current_step_label", "attempts", "started_at", "result"}


def _stable(doc: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in doc.items() if key not in VOLATILE | {"completed_at", "error_message"}}


def test_same_key_same_body_returns_the_same_job(app_each_database: ExamsApp) -> None:
    # The repeated key is found by its unique index (the insert fails, is rolled back): on both databases.
    server = app_each_database
    key = f"key-{uuid.uuid4()}"
    before = job_count(server)

    first = post_json(server, submission(), {"Idempotency-Key": key})
    second = post_json(server, submission(), {"Idempotency-Key": key})

    assert first.status_code == 202, first.text
    assert second.status_code == 202, second.text
    assert second.json()["job_id"] == first.json()["job_id"]
    assert second.headers["location"] == first.headers["location"]
    assert second.headers["retry-after"] == "2"
    assert set(second.json()) == STATUS_FIELDS
    assert _stable(second.json()) == _stable(first.json())
    assert job_count(server) == before + 1
    final, _ = server.wait_final(first.json()["job_id"])
    third = post_json(server, submission(), {"Idempotency-Key": key})
    assert third.status_code == 202, third.text
    assert third.json() == final  # a replay after the end shows the finished job
    assert job_count(server) == before + 1


def test_same_key_other_body_is_422(app_each_database: ExamsApp) -> None:
    server = app_each_database
    key = f"key-{uuid.uuid4()}"
    first = post_json(server, submission(), {"Idempotency-Key": key})
    assert first.status_code == 202, first.text
    before = job_count(server)

    other = post_json(server, submission({"q1": "a"}), {"Idempotency-Key": key})

    doc = assert_problem(other, 422, "/problems/idempotency-key-reused")
    assert doc["detail"] == gettext("problem.idempotency.detail", "en")
    assert job_count(server) == before
    arabic = post_json(server, submission({"q1": "a"}), {"Idempotency-Key": key, "Accept-Language": "ar"})
    ar = assert_problem(arabic, 422, "/problems/idempotency-key-reused")
    assert ARABIC.search(ar["title"])
    assert ar["title"] != doc["title"]


def concurrent_submissions(server: ExamsApp, key: str, count: int = 10) -> list[httpx.Response]:
    """``count`` identical submissions with ``key``, released at the same instant."""
    barrier = threading.Barrier(count)
    responses: list[httpx.Response] = []
    lock = threading.Lock()

    def send() -> None:
        barrier.wait(timeout=30)
        response = post_json(server, submission(), {"Idempotency-Key": key})
        with lock:
            responses.append(response)

    threads = [threading.Thread(target=send) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(responses) == count
    return responses


def test_concurrent_requests_with_the_same_key_make_one_job(app_session: ExamsApp) -> None:
    before = job_count(app_session)

    responses = concurrent_submissions(app_session, f"key-{uuid.uuid4()}")

    assert [r.status_code for r in responses] == [202] * 10, [r.text for r in responses if r.status_code != 202]
    assert len({r.json()["job_id"] for r in responses}) == 1
    assert job_count(app_session) == before + 1


def test_concurrent_requests_with_the_same_key_on_postgresql(pg_url: str, make_app: Callable[..., ExamsApp]) -> None:
    server = make_app(DATABASE_URL=pg_url, AI_API_ENABLED="false")

    responses = concurrent_submissions(server, f"key-{uuid.uuid4()}")

    assert [r.status_code for r in responses] == [202] * 10, [r.text for r in responses if r.status_code != 202]
    job_ids = {r.json()["job_id"] for r in responses}
    assert len(job_ids) == 1
    assert asyncio.run(pg_job_count(pg_url)) == 1
    final, _ = server.wait_final(job_ids.pop())
    assert final["status"] == "completed", final


def test_different_keys_make_different_jobs(app_session: ExamsApp) -> None:
    first = post_json(app_session, submission(), {"Idempotency-Key": f"a-{uuid.uuid4()}"})
    second = post_json(app_session, submission(), {"Idempotency-Key": f"b-{uuid.uuid4()}"})
    assert first.status_code == second.status_code == 202
    assert first.json()["job_id"] != second.json()["job_id"]


def test_overlong_idempotency_key_is_not_reported_as_malformed_json(app_session: ExamsApp) -> None:
    before = job_count(app_session)
    response = post_json(app_session, submission(), {"Idempotency-Key": "k" * 300})
    doc = assert_problem(response, response.status_code)
    assert response.status_code in (400, 422), doc
    assert doc["type"] != "/problems/malformed-json", doc
    assert job_count(app_session) == before
