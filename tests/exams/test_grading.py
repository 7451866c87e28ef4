"""Grading and answer validation: examples for every question type plus hypothesis properties."""

from __future__ import annotations

import inspect
import re
import string
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exams import grading as grading_module
from exams.definitions import ExamDefinition, FieldError, Grading, QuestionDefinition, TopicScore
from exams.grading import correct_answers, grade, normalize_text, validate_answers
from i18n import catalog_keys, gettext

ARABIC = re.compile("[\u0600-\u06ff]")
PROMPT = {"en": "Question?", "ar": "سؤال؟"}


def question(qid: str, qtype: str, answer: Any, **extra: Any) -> QuestionDefinition:
    extra.setdefault("topic", "algebra")
    extra.setdefault("points", 1.0)
    return QuestionDefinition(id=qid, type=qtype, answer=answer, prompt=PROMPT, **extra)  # type: ignore[arg-type]


def exam_of(*questions: QuestionDefinition, pass_percentage: float = 60.0) -> ExamDefinition:
    return ExamDefinition(
        code="MATH-101", title={"en": "Algebra"}, questions=list(questions), pass_percentage=pass_percentage
    )


SPEC_EXAM = exam_of(
    question("q1", "single_choice", "b", options=["a", "b", "c"]),
    question("q2", "multiple_choice", ["a", "c"], options=["a", "b", "c"], points=2.0),
    question("q3", "numeric", 3.14, tolerance=0.01, topic="geometry"),
    question("q4", "true_false", True, topic="geometry"),
    question("q5", "short_text", ["photosynthesis", "التمثيل الضوئي"], topic="biology"),
)


def correct_flags(exam: ExamDefinition, answers: dict[str, object]) -> dict[str, bool]:
    return {g.question_id: g.correct for g in grade(exam, answers).questions}


# grade: examples


def test_spec_example_all_correct() -> None:
    grading = grade(SPEC_EXAM, {"q1": "b", "q2": ["a", "c"], "q3": 3.14, "q4": True, "q5": "photosynthesis"})
    assert grading == Grading(
        score=6.0,
        max_score=6.0,
        percentage=100.0,
        passed=True,
        topics=[
            TopicScore("algebra", 3.0, 3.0, 100.0),
            TopicScore("geometry", 2.0, 2.0, 100.0),
            TopicScore("biology", 1.0, 1.0, 100.0),
        ],
        questions=grading.questions,
    )
    assert [(g.question_id, g.correct, g.awarded, g.max) for g in grading.questions] == [
        ("q1", True, 1.0, 1.0),
        ("q2", True, 2.0, 2.0),
        ("q3", True, 1.0, 1.0),
        ("q4", True, 1.0, 1.0),
        ("q5", True, 1.0, 1.0),
    ]


def test_unanswered_questions_are_listed_with_zero() -> None:
    grading = grade(SPEC_EXAM, {"q4": True})
    assert [g.question_id for g in grading.questions] == ["q1", "q2", "q3", "q4", "q5"]
    assert [g.awarded for g in grading.questions] == [0.0, 0.0, 0.0, 1.0, 0.0]
    assert (grading.score, grading.max_score, grading.percentage, grading.passed) == (1.0, 6.0, 16.67, False)
    assert grading.topics[1] == TopicScore("geometry", 1.0, 2.0, 50.0)


def test_empty_answers() -> None:
    grading = grade(SPEC_EXAM, {})
    assert (grading.score, grading.percentage, grading.passed) == (0.0, 0.0, False)
    assert all(not g.correct for g in grading.questions)


def test_single_choice() -> None:
    assert correct_flags(SPEC_EXAM, {"q1": "b"})["q1"]
    assert not correct_flags(SPEC_EXAM, {"q1": "a"})["q1"]
    assert not correct_flags(SPEC_EXAM, {"q1": "B"})["q1"]
    assert not correct_flags(SPEC_EXAM, {"q1": ["b"]})["q1"]


@pytest.mark.parametrize(
    ("given", "correct"),
    [
        (["a", "c"], True),
        (["c", "a"], True),
        (["a"], False),
        (["a", "b", "c"], False),
        ([], False),
        (["a", "c", "c"], False),
        ("a", False),
        (["a", {"c": 1}], False),
        ([["a"], "c"], False),
    ],
)
def test_multiple_choice_needs_exactly_the_right_set(given: object, correct: bool) -> None:
    assert correct_flags(SPEC_EXAM, {"q2": given})["q2"] is correct


@pytest.mark.parametrize(
    ("given", "correct"),
    [
        (3.14, True),
        (3.15, True),  # exactly at the tolerance edge despite binary floats
        (3.13, True),
        (3, False),
        (3.1501, False),
        (3.1299, False),
        (True, False),
        ("3.14", False),
        (float("nan"), False),
        (float("inf"), False),
        (10**400, False),
    ],
)
def test_numeric_tolerance(given: object, correct: bool) -> None:
    assert correct_flags(SPEC_EXAM, {"q3": given})["q3"] is correct


def test_numeric_default_tolerance_is_exact_and_ints_compare_with_floats() -> None:
    exam = exam_of(question("n", "numeric", 5.0, tolerance=0.0), question("m", "numeric", 0.3))
    assert correct_flags(exam, {"n": 5, "m": 0.1 + 0.2}) == {"n": True, "m": True}
    assert correct_flags(exam, {"n": 5.001, "m": 0.31}) == {"n": False, "m": False}


def test_true_false_is_strictly_boolean() -> None:
    assert correct_flags(SPEC_EXAM, {"q4": True})["q4"]
    assert not correct_flags(SPEC_EXAM, {"q4": False})["q4"]
    assert not correct_flags(SPEC_EXAM, {"q4": 1})["q4"]
    assert not correct_flags(SPEC_EXAM, {"q4": "true"})["q4"]


@pytest.mark.parametrize(
    "given",
    [
        "photosynthesis",
        "  PhotoSynthesis ",
        "PHOTOSYNTHESIS",
        "ＰＨＯＴＯＳＹＮＴＨＥＳＩＳ",  # fullwidth letters, folded by NFKC
        "التمثيل الضوئي",
        " التمثيل   الضوئي ",
        "التَّمْثِيل الضَّوْئِيّ",  # with harakat
        "التمثيـــل الضوئي",  # with tatweel
    ],
)
def test_short_text_accepts_case_space_and_unicode_variants(given: str) -> None:
    assert correct_flags(SPEC_EXAM, {"q5": given})["q5"]


@pytest.mark.parametrize("given", ["photo synthesis", "photosynthesi", "", "   ", ["photosynthesis"], 1])
def test_short_text_rejects_other_answers(given: object) -> None:
    assert not correct_flags(SPEC_EXAM, {"q5": given})["q5"]


def test_short_text_too_long_earns_nothing() -> None:
    exam = exam_of(question("t", "short_text", ["x" * 1000]))
    assert correct_flags(exam, {"t": "x" * 1000})["t"]
    assert not correct_flags(exam, {"t": "x" * 1000 + " "})["t"]  # validation rejects it too


def test_arabic_alef_forms_compare_equal() -> None:
    assert normalize_text("أحمد") == normalize_text("احمد") == normalize_text("إحمد")
    assert normalize_text("  Hello\t\nWORLD ") == "hello world"


def test_fractional_points_do_not_leave_float_noise() -> None:
    exam = exam_of(*(question(f"q{i}", "true_false", True, points=0.1) for i in range(3)))
    grading = grade(exam, {"q0": True, "q1": True, "q2": True})
    assert grading.score == 0.3
    assert grading.max_score == 0.3
    assert grading.topics[0].score == 0.3
    assert grading.percentage == 100.0


def test_integral_values_are_whole_valued_floats() -> None:
    grading = grade(SPEC_EXAM, {"q1": "b"})
    values = [grading.score, grading.max_score, grading.percentage]
    values += [v for t in grading.topics for v in (t.score, t.max_score, t.percentage)]
    values += [v for g in grading.questions for v in (g.awarded, g.max)]
    assert all(type(v) is float for v in values)
    assert grading.score.is_integer()


def test_passed_is_percentage_at_least_pass_percentage() -> None:
    exam = exam_of(*(question(f"q{i}", "true_false", True) for i in range(5)), pass_percentage=60)
    assert grade(exam, {"q0": True, "q1": True, "q2": True}).passed
    assert not grade(exam, {"q0": True, "q1": True}).passed
    everything_needed = exam_of(question("q", "true_false", True), pass_percentage=100)
    assert grade(everything_needed, {"q": True}).passed
    nothing_needed = exam_of(question("q", "true_false", True), pass_percentage=0)
    assert grade(nothing_needed, {}).passed


def test_percentage_rounds_to_two_decimals() -> None:
    exam = exam_of(*(question(f"q{i}", "true_false", True) for i in range(3)))
    assert grade(exam, {"q0": True}).percentage == 33.33
    assert grade(exam, {"q0": True, "q1": True}).percentage == 66.67
    halves = exam_of(*(question(f"q{i}", "true_false", True) for i in range(32)))
    assert grade(halves, {f"q{i}": True for i in range(13)}).percentage == 40.63  # 40.625, half up


def test_topics_in_order_of_first_appearance() -> None:
    exam = exam_of(
        question("a", "true_false", True, topic="geometry"),
        question("b", "true_false", True, topic="algebra"),
        question("c", "true_false", True, topic="geometry"),
    )
    assert [t.topic for t in grade(exam, {}).topics] == ["geometry", "algebra"]


# validate_answers


def test_validate_accepts_the_spec_example_and_partial_answers() -> None:
    spec = {"q1": "b", "q2": ["a", "c"], "q3": 3.14, "q4": True, "q5": "photosynthesis"}
    assert validate_answers(SPEC_EXAM, spec) == []
    assert validate_answers(SPEC_EXAM, {}) == []
    assert validate_answers(SPEC_EXAM, {"q3": 3, "q2": []}) == []


@pytest.mark.parametrize("answers", [None, [], "q1=b", 3, True])
def test_validate_answers_must_be_an_object(answers: object) -> None:
    assert validate_answers(SPEC_EXAM, answers) == [FieldError("answers", "validation.not_object")]


OPTIONS = {"options": "a, b, c"}


@pytest.mark.parametrize(
    ("answers", "expected"),
    [
        (
            {"q9": "b"},
            FieldError("answers.q9", "validation.unknown_question", {"question_id": "q9", "code": "MATH-101"}),
        ),
        ({"q1": 2}, FieldError("answers.q1", "validation.answer_not_string")),
        ({"q1": ["b"]}, FieldError("answers.q1", "validation.answer_not_string")),
        ({"q1": "d"}, FieldError("answers.q1", "validation.answer_not_option", OPTIONS)),
        ({"q2": "a"}, FieldError("answers.q2", "validation.answer_not_string_list")),
        ({"q2": ["a", 1]}, FieldError("answers.q2", "validation.answer_not_string_list")),
        ({"q2": ["a", "x"]}, FieldError("answers.q2", "validation.answer_not_option", OPTIONS)),
        (
            {"q2": ["a", "c", "a"]},
            FieldError("answers.q2", "validation.answer_repeated_option", {"option": "a"}),
        ),
        ({"q3": "3.14"}, FieldError("answers.q3", "validation.answer_not_number")),
        ({"q3": True}, FieldError("answers.q3", "validation.answer_not_number")),
        ({"q3": float("nan")}, FieldError("answers.q3", "validation.answer_not_number")),
        ({"q3": float("-inf")}, FieldError("answers.q3", "validation.answer_not_number")),
        ({"q3": 10**400}, FieldError("answers.q3", "validation.answer_not_number")),
        ({"q3": None}, FieldError("answers.q3", "validation.answer_not_number")),
        ({"q4": "true"}, FieldError("answers.q4", "validation.answer_not_boolean")),
        ({"q4": 0}, FieldError("answers.q4", "validation.answer_not_boolean")),
        ({"q5": ["photosynthesis"]}, FieldError("answers.q5", "validation.answer_not_string")),
        ({"q5": "x" * 1001}, FieldError("answers.q5", "validation.too_long", {"max": 1000})),
    ],
)
def test_validate_answer_errors(answers: dict[str, object], expected: FieldError) -> None:
    assert validate_answers(SPEC_EXAM, answers) == [expected]


def test_validate_reports_every_bad_field_in_request_order() -> None:
    errors = validate_answers(SPEC_EXAM, {"q4": "yes", "q1": "b", "zz": 1, "q3": "pi"})
    assert [e.field for e in errors] == ["answers.q4", "answers.zz", "answers.q3"]


def test_short_text_at_the_limit_is_accepted() -> None:
    assert validate_answers(SPEC_EXAM, {"q5": "x" * 1000}) == []


# i18n: every message key the grader emits, and the ones the API uses, exist in both languages.

API_KEYS = {
    "validation.exam_unknown": {"code"},
    "validation.exam_closed": {"code"},
    "validation.required": set(),
    "validation.not_string": set(),
    "validation.too_long": {"max"},
    "validation.not_object": set(),
}


def _placeholders(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name}


def test_every_validation_key_is_translated_with_the_same_placeholders() -> None:
    used = set(re.findall(r'"(validation\.\w+)"', inspect.getsource(grading_module))) | set(API_KEYS)
    assert len(used) >= 12
    for key in used:
        assert key in catalog_keys("en"), key
        assert key in catalog_keys("ar"), key
        english, arabic = gettext(key, "en"), gettext(key, "ar")
        assert ARABIC.search(arabic), key
        assert _placeholders(english) == _placeholders(arabic), key
    for key, params in API_KEYS.items():
        assert _placeholders(gettext(key, "en")) == params, key


def test_messages_format_their_parameters() -> None:
    assert gettext("validation.exam_unknown", "en", code="X-1") == "Unknown exam code X-1."
    assert gettext("validation.exam_closed", "en", code="X-1") == "Exam X-1 is closed and accepts no submissions."
    assert gettext("validation.too_long", "en", max=1000) == "Must be at most 1000 characters."
    assert "1000" in gettext("validation.too_long", "ar", max=1000)


# hypothesis properties

TOPICS = ("algebra", "geometry", "biology")
TEXT_ALPHABET = string.ascii_letters + string.digits + "ابتثجحخدذرسشصضطظعغفقكلمنهوي"
OPTION_VALUES = st.text(alphabet="abcdefgh", min_size=1, max_size=3)
WORDS = st.lists(st.text(alphabet=TEXT_ALPHABET, min_size=1, max_size=8), min_size=1, max_size=3).map(" ".join)
FINITE = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False)
POINTS = st.one_of(st.integers(1, 10).map(float), st.floats(0.05, 10).map(lambda p: max(round(p, 2), 0.01)))


@st.composite
def questions(draw: st.DrawFn, qid: str) -> QuestionDefinition:
    qtype = draw(st.sampled_from(["single_choice", "multiple_choice", "true_false", "numeric", "short_text"]))
    extra: dict[str, Any] = {"topic": draw(st.sampled_from(TOPICS)), "points": draw(POINTS)}
    if qtype in ("single_choice", "multiple_choice"):
        options = draw(st.lists(OPTION_VALUES, min_size=2, max_size=5, unique=True))
        extra["options"] = options
        if qtype == "single_choice":
            answer: Any = draw(st.sampled_from(options))
        else:
            answer = draw(st.lists(st.sampled_from(options), min_size=1, unique=True))
    elif qtype == "true_false":
        answer = draw(st.booleans())
    elif qtype == "numeric":
        answer = draw(FINITE)
        extra["tolerance"] = draw(st.floats(0, 10))
    else:
        answer = draw(st.lists(WORDS, min_size=1, max_size=3))
    return question(qid, qtype, answer, **extra)


@st.composite
def exam_definitions(draw: st.DrawFn) -> ExamDefinition:
    count = draw(st.integers(1, 8))
    return exam_of(
        *(draw(questions(f"q{i}")) for i in range(1, count + 1)),
        pass_percentage=draw(st.floats(0, 100)),
    )


ANY_ANSWER = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    OPTION_VALUES,
    st.text(alphabet=TEXT_ALPHABET + " \t", max_size=20),
    st.lists(OPTION_VALUES, max_size=5),
    st.lists(st.one_of(st.integers(), st.text(alphabet=TEXT_ALPHABET, max_size=3)), max_size=3),
)


@st.composite
def exams_with_answers(draw: st.DrawFn) -> tuple[ExamDefinition, dict[str, object]]:
    exam = draw(exam_definitions())
    right = correct_answers(exam)
    answers: dict[str, object] = {}
    for q in exam.questions:
        choice = draw(st.sampled_from(["skip", "right", "random"]))
        if choice == "right":
            answers[q.id] = right[q.id]
        elif choice == "random":
            answers[q.id] = draw(ANY_ANSWER)
    return exam, answers


@given(exams_with_answers())
def test_score_is_between_zero_and_max(case: tuple[ExamDefinition, dict[str, object]]) -> None:
    exam, answers = case
    grading = grade(exam, answers)
    assert 0 <= grading.score <= grading.max_score
    assert 0 <= grading.percentage <= 100
    for topic in grading.topics:
        assert 0 <= topic.score <= topic.max_score
    for item in grading.questions:
        assert item.awarded in (0.0, item.max)
        assert item.correct is (item.awarded == item.max)


@given(exams_with_answers())
def test_every_question_appears_once_in_exam_order(case: tuple[ExamDefinition, dict[str, object]]) -> None:
    exam, answers = case
    grading = grade(exam, answers)
    assert [g.question_id for g in grading.questions] == [q.id for q in exam.questions]
    assert [t.topic for t in grading.topics] == list(dict.fromkeys(q.topic for q in exam.questions))


@given(exams_with_answers())
def test_percentage_consistent_with_score(case: tuple[ExamDefinition, dict[str, object]]) -> None:
    exam, answers = case
    grading = grade(exam, answers)
    assert grading.percentage == pytest.approx(grading.score / grading.max_score * 100, abs=0.0051)
    assert grading.passed is (grading.percentage >= exam.pass_percentage)
    assert grading.score == pytest.approx(sum(g.awarded for g in grading.questions), abs=1e-6)
    assert grading.max_score == pytest.approx(sum(q.points for q in exam.questions), abs=1e-6)


@given(exam_definitions())
def test_all_correct_answers_give_full_marks(exam: ExamDefinition) -> None:
    answers = correct_answers(exam)
    assert validate_answers(exam, answers) == []
    grading = grade(exam, answers)
    assert grading.percentage == 100.0
    assert grading.passed
    assert grading.score == grading.max_score
    assert all(t.percentage == 100.0 for t in grading.topics)


@given(exams_with_answers())
def test_validated_answers_never_break_grading(case: tuple[ExamDefinition, dict[str, object]]) -> None:
    exam, answers = case
    errors = validate_answers(exam, answers)
    assert all(e.field.startswith("answers.") for e in errors)
    grading = grade(exam, answers)
    for error in errors:
        qid = error.field.removeprefix("answers.")
        assert not next(g for g in grading.questions if g.question_id == qid).correct


@given(st.lists(OPTION_VALUES, min_size=2, max_size=6, unique=True), st.data())
def test_multiple_choice_order_does_not_matter(options: list[str], data: st.DataObject) -> None:
    answer = data.draw(st.lists(st.sampled_from(options), min_size=1, unique=True))
    exam = exam_of(question("m", "multiple_choice", answer, options=options))
    shuffled = data.draw(st.permutations(answer))
    assert validate_answers(exam, {"m": shuffled}) == []
    assert grade(exam, {"m": shuffled}).questions[0].correct


@given(WORDS, st.data())
def test_short_text_ignores_case_and_spacing(accepted: str, data: st.DataObject) -> None:
    exam = exam_of(question("t", "short_text", [accepted]))
    gaps = data.draw(st.sampled_from([" ", "  ", "\t", " \n "]))
    variant = data.draw(st.sampled_from([str.upper, str.lower, str.swapcase, str.title]))(accepted)
    given_text = data.draw(st.sampled_from(["", " ", "\t"])) + gaps.join(variant.split()) + "  "
    assert grade(exam, {"t": given_text}).questions[0].correct


@given(FINITE, st.floats(0, 100), st.floats(0, 1))
def test_numeric_within_tolerance_is_correct(answer: float, tolerance: float, fraction: float) -> None:
    exam = exam_of(question("n", "numeric", answer, tolerance=tolerance))
    offset = tolerance * fraction
    assert grade(exam, {"n": answer + offset}).questions[0].correct
    assert grade(exam, {"n": answer - offset}).questions[0].correct
    assert not grade(exam, {"n": answer + tolerance + 0.01 + abs(answer) * 1e-6}).questions[0].correct
