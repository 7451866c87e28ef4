"""HTTP feature tests of the exams catalog API (``GET /api/exams``, ``GET /api/exams/{code}``), in process.

Compared with the shipped sample catalog file; correct answers must never leave the server.
"""

from __future__ import annotations

import json
import re
from typing import Any

import httpx
import pytest

from i18n import gettext
from support import SAMPLE_CATALOG, ExamsApp

ARABIC = re.compile("[\u0600-\u06ff]")
QUESTION_TYPES = {"single_choice", "multiple_choice", "true_false", "numeric", "short_text"}


def sample() -> dict[str, dict[str, Any]]:
    """The sample catalog file, by exam code."""
    return {exam["code"]: exam for exam in json.loads(SAMPLE_CATALOG.read_text(encoding="utf-8"))}


def api(server: ExamsApp, path: str, **params: str) -> httpx.Response:
    return server.http.get(path, params=params or None)


def keys_anywhere(value: Any) -> set[str]:
    """Every object key in a decoded JSON value, at any depth."""
    if isinstance(value, dict):
        return set(value).union(*(keys_anywhere(v) for v in value.values()))
    if isinstance(value, list):
        return set().union(*(keys_anywhere(v) for v in value))
    return set()


def test_list_exams_gives_code_title_question_count_status(app_session: ExamsApp) -> None:
    response = api(app_session, "/api/exams")

    assert response.status_code == 200, response.text
    assert response.headers["content-type"].split(";")[0] == "application/json"
    body = response.json()
    assert set(body) == {"items"}
    items = {item["code"]: item for item in body["items"]}
    assert len(items) == len(body["items"]), "duplicate codes"
    expected = sample()
    assert set(items) == set(expected)
    for code, exam in expected.items():
        item = items[code]
        assert {"code", "title", "question_count", "status"} <= set(item), item
        assert item["title"] == exam["title"]["en"]
        assert item["question_count"] == len(exam["questions"])
        assert item["status"] == exam["status"]
    assert items["HIST-100"]["status"] == "closed"
    assert items["MATH-101"]["status"] == "open"


@pytest.mark.parametrize("how", ["query", "header"])
def test_list_exams_in_arabic(app_session: ExamsApp, how: str) -> None:
    if how == "query":
        response = api(app_session, "/api/exams", lang="ar")
    else:
        response = app_session.http.get("/api/exams", headers={"Accept-Language": "ar"})

    assert response.status_code == 200
    expected = sample()
    for item in response.json()["items"]:
        assert item["title"] == expected[item["code"]]["title"]["ar"]
        assert ARABIC.search(item["title"])
        assert item["status"] == expected[item["code"]]["status"], "machine fields do not change"


def test_exam_detail_has_questions_without_answers(app_session: ExamsApp) -> None:
    response = api(app_session, "/api/exams/MATH-101")

    assert response.status_code == 200, response.text
    raw = response.text
    body = response.json()
    exam = sample()["MATH-101"]
    assert (body["code"], body["title"], body["status"]) == ("MATH-101", exam["title"]["en"], "open")
    assert [q["id"] for q in body["questions"]] == [q["id"] for q in exam["questions"]]
    for question, source in zip(body["questions"], exam["questions"], strict=True):
        assert question["type"] in QUESTION_TYPES
        assert (question["topic"], question["type"], question["points"]) == (
            source["topic"],
            source["type"],
            source["points"],
        )
        assert question["prompt"] == source["prompt"]["en"]
        if source["type"] in ("single_choice", "multiple_choice"):
            assert question["options"] == source["options"]
        if "tolerance" in source:
            assert question["tolerance"] == source["tolerance"]
    assert not {"answer", "answers", "correct", "correct_answer", "accepted"} & keys_anywhere(body)
    for source in exam["questions"]:
        if source["type"] == "short_text":
            for accepted in source["answer"]:
                assert accepted not in raw, f"accepted answer {accepted!r} of {source['id']} leaked"


@pytest.mark.parametrize("code", sorted(sample()))
def test_no_exam_leaks_its_answers(app_session: ExamsApp, code: str) -> None:
    for lang in ("en", "ar"):
        response = api(app_session, f"/api/exams/{code}", lang=lang)
        assert response.status_code == 200, response.text
        body = response.json()
        assert "answer" not in keys_anywhere(body)
        assert len(body["questions"]) == len(sample()[code]["questions"])


def test_exam_detail_in_arabic(app_session: ExamsApp) -> None:
    response = api(app_session, "/api/exams/MATH-101", lang="ar")

    assert response.status_code == 200
    body = response.json()
    exam = sample()["MATH-101"]
    assert body["title"] == exam["title"]["ar"]
    assert [q["prompt"] for q in body["questions"]] == [q["prompt"]["ar"] for q in exam["questions"]]
    assert [q["type"] for q in body["questions"]] == [q["type"] for q in exam["questions"]]


def test_closed_exam_detail_is_visible(app_session: ExamsApp) -> None:
    response = api(app_session, "/api/exams/HIST-100")
    assert response.status_code == 200
    assert response.json()["status"] == "closed"


@pytest.mark.parametrize(
    "code", ["NOPE-1", "MATH-1010", "%3Cscript%3E", "%D8%A7%D9%85%D8%AA%D8%AD%D8%A7%D9%86", "A" * 300]
)
def test_unknown_exam_code_is_404_problem(app_session: ExamsApp, code: str) -> None:
    response = api(app_session, f"/api/exams/{code}")

    assert response.status_code == 404, response.text
    assert response.headers["content-type"].split(";")[0] == "application/problem+json"
    doc = response.json()
    assert (doc["type"], doc["status"], doc["title"]) == ("/problems/not-found", 404, "Not found")
    assert isinstance(doc["detail"], str)
    assert doc["detail"]


def test_unknown_exam_code_404_in_arabic(app_session: ExamsApp) -> None:
    response = api(app_session, "/api/exams/NOPE-1", lang="ar")

    assert response.status_code == 404
    assert response.headers["content-language"] == "ar"
    doc = response.json()
    assert doc["type"] == "/problems/not-found"
    assert doc["title"] == gettext("problem.not_found.title", "ar")
    assert doc["detail"] == gettext("problem.not_found.exam", "ar", code="NOPE-1")
