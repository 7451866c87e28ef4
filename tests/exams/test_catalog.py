"""Catalog parsing: every rule's error path, defaults, files, and the shipped sample catalog."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from exams.catalog import SAMPLE_CATALOG_PATH, CatalogError, load_catalog_file, parse_catalog
from exams.grading import grade, validate_answers

ARABIC = re.compile("[\u0600-\u06ff]")
SPEC_ANSWERS: dict[str, object] = {
    "q1": "b",
    "q2": ["a", "c"],
    "q3": 3.14,
    "q4": True,
    "q5": "photosynthesis",
}


def _prompt() -> dict[str, str]:
    return {"en": "Question?", "ar": "سؤال؟"}


def valid_exam() -> dict[str, Any]:
    return {
        "code": "MATH-101",
        "status": "open",
        "pass_percentage": 60,
        "title": {"en": "Algebra basics", "ar": "أساسيات الجبر"},
        "questions": [
            {
                "id": "q1",
                "topic": "algebra",
                "type": "single_choice",
                "points": 1,
                "prompt": _prompt(),
                "options": ["a", "b", "c"],
                "answer": "b",
            },
            {
                "id": "q2",
                "topic": "algebra",
                "type": "multiple_choice",
                "points": 2,
                "prompt": _prompt(),
                "options": ["a", "b", "c"],
                "answer": ["a", "c"],
            },
            {
                "id": "q3",
                "topic": "geometry",
                "type": "numeric",
                "points": 1,
                "prompt": _prompt(),
                "answer": 3.14,
                "tolerance": 0.01,
            },
            {
                "id": "q4",
                "topic": "geometry",
                "type": "true_false",
                "points": 1,
                "prompt": _prompt(),
                "answer": True,
            },
            {
                "id": "q5",
                "topic": "biology",
                "type": "short_text",
                "points": 1,
                "prompt": _prompt(),
                "answer": ["photosynthesis"],
            },
        ],
    }


def _parse(document: object) -> list[Any]:
    return parse_catalog(json.dumps(document))


def test_parses_a_single_exam_object() -> None:
    (exam,) = _parse(valid_exam())
    assert exam.code == "MATH-101"
    assert exam.title == {"en": "Algebra basics", "ar": "أساسيات الجبر"}
    assert [q.id for q in exam.questions] == ["q1", "q2", "q3", "q4", "q5"]
    q1, q2, q3, q4, q5 = exam.questions
    assert (q1.options, q1.answer) == (["a", "b", "c"], "b")
    assert q2.answer == ["a", "c"]
    assert (q3.answer, q3.tolerance) == (3.14, 0.01)
    assert q4.answer is True
    assert q5.answer == ["photosynthesis"]
    assert all(isinstance(q.points, float) for q in exam.questions)


def test_parses_a_list_of_exams_in_order_from_bytes() -> None:
    second = valid_exam()
    second["code"] = "SCI-201"
    exams = parse_catalog(json.dumps([valid_exam(), second]).encode())
    assert [exam.code for exam in exams] == ["MATH-101", "SCI-201"]


def test_defaults() -> None:
    document = valid_exam()
    del document["status"], document["pass_percentage"], document["questions"][2]["tolerance"]
    (exam,) = _parse(document)
    assert exam.status == "open"
    assert exam.pass_percentage == 60.0
    assert exam.questions[2].tolerance == 0.0


def test_short_text_single_string_becomes_a_list() -> None:
    document = valid_exam()
    document["questions"][4]["answer"] = "photosynthesis"
    (exam,) = _parse(document)
    assert exam.questions[4].answer == ["photosynthesis"]


def test_closed_status_and_boundary_values_are_accepted() -> None:
    document = valid_exam()
    document["status"] = "closed"
    document["pass_percentage"] = 100
    document["code"] = "a.B_c-9" + "x" * 57
    document["questions"][0]["points"] = 0.5
    document["questions"][2]["tolerance"] = 0
    (exam,) = _parse(document)
    assert exam.status == "closed"
    assert exam.pass_percentage == 100.0
    assert exam.questions[0].points == 0.5


def _set(path: tuple[Any, ...], value: object) -> Callable[[dict[str, Any]], None]:
    def mutate(document: dict[str, Any]) -> None:
        target: Any = document
        for step in path[:-1]:
            target = target[step]
        target[path[-1]] = value

    return mutate


def _delete(path: tuple[Any, ...]) -> Callable[[dict[str, Any]], None]:
    def mutate(document: dict[str, Any]) -> None:
        target: Any = document
        for step in path[:-1]:
            target = target[step]
        del target[path[-1]]

    return mutate


Q = "questions"
EXAM_ERRORS: list[tuple[str, Callable[[dict[str, Any]], None], str]] = [
    ("code missing", _delete(("code",)), 'exam #1: "code" must be a non-empty string'),
    ("code empty", _set(("code",), ""), 'exam #1: "code" must be a non-empty string'),
    ("code not str", _set(("code",), 101), 'exam #1: "code" must be a non-empty string'),
    ("code too long", _set(("code",), "X" * 65), 'exam #1: "code" must be at most 64'),
    ("code bad chars", _set(("code",), "MATH 101"), 'exam #1: "code" must be at most 64'),
    ("unknown exam field", _set(("titel",), {}), "exam MATH-101: unknown field(s) 'titel'"),
    ("status", _set(("status",), "draft"), 'exam MATH-101: "status" must be "open" or "closed"'),
    ("pass > 100", _set(("pass_percentage",), 101), '"pass_percentage" must be a number from 0 to 100'),
    ("pass < 0", _set(("pass_percentage",), -1), '"pass_percentage" must be a number from 0 to 100'),
    ("pass bool", _set(("pass_percentage",), True), '"pass_percentage" must be a number'),
    ("pass str", _set(("pass_percentage",), "60"), '"pass_percentage" must be a number'),
    ("title missing", _delete(("title",)), 'exam MATH-101: "title" is required'),
    ("title not dict", _set(("title",), "Algebra"), '"title" must be an object of locale -> text'),
    ("title empty", _set(("title",), {}), '"title" must be an object of locale -> text'),
    ("title no en", _set(("title",), {"ar": "الجبر"}), '"title" needs an English ("en") text'),
    ("title blank", _set(("title", "ar"), "  "), '"title" text for locale "ar" must be a non-empty'),
    ("title not str", _set(("title", "en"), 1), '"title" text for locale "en" must be a non-empty'),
    ("title empty locale", _set(("title", ""), "x"), '"title" has an empty locale key'),
    ("questions missing", _delete((Q,)), 'exam MATH-101: "questions" must be a non-empty list'),
    ("questions empty", _set((Q,), []), '"questions" must be a non-empty list'),
    ("questions not list", _set((Q,), {}), '"questions" must be a non-empty list'),
    ("question not dict", _set((Q, 0), "q1"), "exam MATH-101, question #1: must be an object"),
    ("id missing", _delete((Q, 1, "id")), 'exam MATH-101, question #2: "id" must be 1-64'),
    ("id empty", _set((Q, 1, "id"), ""), 'question #2: "id" must be 1-64'),
    ("id with dot", _set((Q, 1, "id"), "q.2"), 'question #2: "id" must be 1-64'),
    ("id not str", _set((Q, 1, "id"), 2), 'question #2: "id" must be 1-64'),
    ("duplicate id", _set((Q, 1, "id"), "q1"), "exam MATH-101, question q1: duplicate question id"),
    ("unknown q field", _set((Q, 0, "hint"), "x"), "question q1: unknown field(s) 'hint'"),
    ("topic missing", _delete((Q, 0, "topic")), 'question q1: "topic" must be a non-empty string'),
    ("topic blank", _set((Q, 0, "topic"), " "), 'question q1: "topic" must be a non-empty string'),
    ("type unknown", _set((Q, 0, "type"), "essay"), 'question q1: "type" must be one of single_choice'),
    ("type missing", _delete((Q, 0, "type")), 'question q1: "type" must be one of'),
    ("points zero", _set((Q, 0, "points"), 0), 'question q1: "points" must be a number greater than 0'),
    ("points negative", _set((Q, 0, "points"), -1), '"points" must be a number greater than 0'),
    ("points bool", _set((Q, 0, "points"), True), '"points" must be a number greater than 0'),
    ("points missing", _delete((Q, 0, "points")), '"points" must be a number greater than 0'),
    ("prompt missing", _delete((Q, 0, "prompt")), 'question q1: "prompt" is required'),
    ("prompt no en", _set((Q, 0, "prompt"), {"ar": "سؤال"}), '"prompt" needs an English ("en") text'),
    ("prompt not dict", _set((Q, 0, "prompt"), "Q?"), '"prompt" must be an object of locale -> text'),
    ("answer missing", _delete((Q, 0, "answer")), 'question q1: single_choice question needs an "answer"'),
    ("options missing", _delete((Q, 0, "options")), 'single_choice question needs "options"'),
    ("options one", _set((Q, 0, "options"), ["a"]), 'single_choice question needs "options"'),
    ("options not list", _set((Q, 0, "options"), "abc"), 'single_choice question needs "options"'),
    ("options not str", _set((Q, 0, "options"), ["a", 2]), '"options" must all be non-empty strings'),
    ("options empty str", _set((Q, 0, "options"), ["a", ""]), '"options" must all be non-empty strings'),
    ("options repeated", _set((Q, 0, "options"), ["a", "b", "a"]), '"options" must be unique'),
    ("single not option", _set((Q, 0, "answer"), "d"), 'single_choice "answer" must be one of the "options"'),
    ("single not str", _set((Q, 0, "answer"), ["b"]), 'single_choice "answer" must be one of'),
    ("multi options missing", _delete((Q, 1, "options")), "question q2: multiple_choice question needs"),
    ("multi options repeated", _set((Q, 1, "options"), ["a", "a"]), '"options" must be unique'),
    ("multi answer str", _set((Q, 1, "answer"), "a"), 'multiple_choice "answer" must be a non-empty list'),
    ("multi answer empty", _set((Q, 1, "answer"), []), 'multiple_choice "answer" must be a non-empty list'),
    ("multi not option", _set((Q, 1, "answer"), ["a", "d"]), '"answer" members must all be among the'),
    ("multi not str", _set((Q, 1, "answer"), ["a", 1]), '"answer" members must all be among the'),
    ("multi repeated", _set((Q, 1, "answer"), ["a", "a"]), 'multiple_choice "answer" members must be unique'),
    (
        "numeric not number",
        _set((Q, 2, "answer"), "3.14"),
        'exam MATH-101, question q3: numeric question needs a numeric "answer"',
    ),
    ("numeric bool", _set((Q, 2, "answer"), True), 'question q3: numeric question needs a numeric "answer"'),
    ("numeric huge int", _set((Q, 2, "answer"), 10**400), 'numeric question needs a numeric "answer"'),
    ("tolerance negative", _set((Q, 2, "tolerance"), -0.1), 'question q3: "tolerance" must be a number >= 0'),
    ("tolerance str", _set((Q, 2, "tolerance"), "0.1"), '"tolerance" must be a number >= 0'),
    ("tolerance bool", _set((Q, 2, "tolerance"), False), '"tolerance" must be a number >= 0'),
    (
        "numeric options",
        _set((Q, 2, "options"), ["a", "b"]),
        'question q3: numeric question takes no "options"',
    ),
    ("true_false not bool", _set((Q, 3, "answer"), 1), "question q4: true_false question needs a boolean"),
    ("true_false str", _set((Q, 3, "answer"), "true"), "true_false question needs a boolean"),
    ("tolerance on bool", _set((Q, 3, "tolerance"), 0), 'true_false question takes no "tolerance"'),
    ("short empty list", _set((Q, 4, "answer"), []), 'question q5: short_text "answer" must be a string or'),
    ("short number", _set((Q, 4, "answer"), 5), 'short_text "answer" must be a string or a non-empty list'),
    ("short member int", _set((Q, 4, "answer"), ["x", 1]), 'short_text "answer" entries must be non-blank'),
    ("short blank", _set((Q, 4, "answer"), "   "), 'short_text "answer" entries must be non-blank'),
    ("short too long", _set((Q, 4, "answer"), ["x" * 1001]), "entries must be at most 1000 chars"),
    ("short options", _set((Q, 4, "options"), ["a", "b"]), 'short_text question takes no "options"'),
]


@pytest.mark.parametrize(
    ("mutate", "message"), [(m, msg) for _, m, msg in EXAM_ERRORS], ids=[name for name, _, _ in EXAM_ERRORS]
)
def test_catalog_errors_name_exam_question_and_field(mutate: Callable[[dict[str, Any]], None], message: str) -> None:
    document = copy.deepcopy(valid_exam())
    mutate(document)
    with pytest.raises(CatalogError) as caught:
        _parse(document)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("{not json", "catalog is not valid JSON"),
        ("NaN", "catalog is not valid JSON"),
        ("1e400", "catalog is not valid JSON"),
        ('"MATH-101"', "catalog must be an exam object or a list of exam objects"),
        ("[]", "catalog holds no exams"),
        ("[42]", "exam #1: must be an object"),
        (b"\xff\xfe", "catalog is not valid JSON"),
    ],
)
def test_document_level_errors(raw: str | bytes, message: str) -> None:
    with pytest.raises(CatalogError, match=re.escape(message)):
        parse_catalog(raw)


def test_error_in_second_exam_names_its_position() -> None:
    with pytest.raises(CatalogError, match=re.escape("exam #2: must be an object")):
        _parse([valid_exam(), "oops"])


def test_duplicate_exam_codes_in_one_file() -> None:
    with pytest.raises(CatalogError, match="exam MATH-101: duplicate exam code"):
        _parse([valid_exam(), valid_exam()])


def test_catalog_error_is_a_value_error() -> None:
    assert issubclass(CatalogError, ValueError)


def test_load_catalog_file(tmp_path: Path) -> None:
    path = tmp_path / "exams.json"
    path.write_text(json.dumps(valid_exam(), ensure_ascii=False), encoding="utf-8")
    (exam,) = load_catalog_file(path)
    assert exam.title["ar"] == "أساسيات الجبر"


def test_load_catalog_file_errors_name_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "missing.json"
    with pytest.raises(CatalogError, match="cannot read catalog file") as caught:
        load_catalog_file(missing)
    assert str(missing) in str(caught.value)
    broken = tmp_path / "broken.json"
    broken.write_text("[]", encoding="utf-8")
    with pytest.raises(CatalogError, match="catalog holds no exams") as caught:
        load_catalog_file(broken)
    assert str(caught.value).startswith(str(broken))


# The shipped sample catalog.


def test_sample_catalog_parses_with_open_and_closed_exams() -> None:
    exams = load_catalog_file(SAMPLE_CATALOG_PATH)
    open_codes = {exam.code for exam in exams if exam.status == "open"}
    assert {"MATH-101", "SCI-201", "GEO-110"} <= open_codes
    assert any(exam.status == "closed" for exam in exams)
    assert all(5 <= len(exam.questions) <= 8 for exam in exams)


def test_sample_catalog_covers_every_question_type() -> None:
    exams = load_catalog_file(SAMPLE_CATALOG_PATH)
    types = {question.type for exam in exams for question in exam.questions}
    assert types == {"single_choice", "multiple_choice", "true_false", "numeric", "short_text"}
    open_types = {q.type for exam in exams if exam.status == "open" for q in exam.questions}
    assert open_types == types


def test_sample_catalog_is_english_and_arabic_throughout() -> None:
    for exam in load_catalog_file(SAMPLE_CATALOG_PATH):
        assert ARABIC.search(exam.title["ar"]), exam.code
        assert not ARABIC.search(exam.title["en"]), exam.code
        for question in exam.questions:
            assert set(question.prompt) == {"en", "ar"}, (exam.code, question.id)
            assert ARABIC.search(question.prompt["ar"]), (exam.code, question.id)
            assert not ARABIC.search(question.prompt["en"]), (exam.code, question.id)


def test_sample_catalog_short_text_accepts_an_arabic_answer_where_it_fits() -> None:
    exams = {exam.code: exam for exam in load_catalog_file(SAMPLE_CATALOG_PATH)}
    photosynthesis = exams["MATH-101"].questions[4]
    assert "التمثيل الضوئي" in photosynthesis.answer


def test_sample_math_101_matches_the_spec_example() -> None:
    exams = {exam.code: exam for exam in load_catalog_file(SAMPLE_CATALOG_PATH)}
    math = exams["MATH-101"]
    assert math.status == "open"
    assert math.title["en"] == "Algebra basics"
    by_id = {question.id: question for question in math.questions}
    assert (by_id["q1"].type, by_id["q1"].options, by_id["q1"].answer) == (
        "single_choice",
        ["a", "b", "c"],
        "b",
    )
    assert (by_id["q2"].type, by_id["q2"].options, by_id["q2"].answer) == (
        "multiple_choice",
        ["a", "b", "c"],
        ["a", "c"],
    )
    assert (by_id["q3"].type, by_id["q3"].answer, by_id["q3"].tolerance) == ("numeric", 3.14, 0.01)
    assert (by_id["q4"].type, by_id["q4"].answer) == ("true_false", True)
    assert by_id["q5"].type == "short_text"
    assert validate_answers(math, SPEC_ANSWERS) == []
    grading = grade(math, SPEC_ANSWERS)
    assert [g.correct for g in grading.questions[:5]] == [True] * 5
