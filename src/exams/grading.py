"""Pure answer validation and grading: per-question, per-topic and overall scores of a submission.

No I/O here; the API validates a request with `validate_answers` and the pipeline calls `grade`.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Mapping
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from exams.definitions import (
    AnswerValue,
    ExamDefinition,
    FieldError,
    Grading,
    QuestionDefinition,
    QuestionGrade,
    TopicScore,
)

__all__ = (
    "MAX_TEXT_ANSWER_LENGTH",
    "correct_answers",
    "grade",
    "normalize_text",
    "validate_answers",
)

#: Longest short_text answer a student may send (characters).
MAX_TEXT_ANSWER_LENGTH = 1000

# Numeric answers are compared in binary floating point, where e.g. 3.15 - 3.14 is
# 0.010000000000000231 > 0.01: without this slack an answer exactly at the tolerance's edge would
# fail. It is relative to the expected value's magnitude because representation error is too.
_NUMERIC_EPSILON = 1e-9
# Sums of fractional points (0.1 + 0.2) leave binary noise; 6 decimals is far finer than any mark.
_SCORE_DECIMALS = 6
# Arabic harakat (fatha … sukun, superscript alef) and tatweel are optional in writing.
_ARABIC_OPTIONAL_MARKS = re.compile("[\u064b-\u065f\u0670\u0640]")
# Hamza-carrying alef forms are routinely written as a bare alef.
_ARABIC_ALEFS = str.maketrans({"\u0622": "\u0627", "\u0623": "\u0627", "\u0625": "\u0627", "\u0671": "\u0627"})


def normalize_text(text: str) -> str:
    """Fold ``text`` for short_text comparison: NFKC, casefold, Arabic spelling variants, spaces."""
    folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())
    folded = _ARABIC_OPTIONAL_MARKS.sub("", folded).translate(_ARABIC_ALEFS)
    return " ".join(folded.split())


def _as_number(value: object) -> float | None:
    """Return ``value`` as a finite float, or None when it is not a usable JSON number."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def validate_answers(exam: ExamDefinition, answers: object) -> list[FieldError]:
    """Check the request's decoded ``answers`` value against ``exam``; empty when acceptable.

    Unanswered questions are fine (they earn 0); the field paths are ``answers`` and
    ``answers.<question id>``.
    """
    if not isinstance(answers, dict):
        return [FieldError("answers", "validation.not_object")]
    questions = {question.id: question for question in exam.questions}
    errors: list[FieldError] = []
    for key, value in answers.items():
        field = f"answers.{key}"
        question = questions.get(key)
        if question is None:
            params = {"question_id": key, "code": exam.code}
            errors.append(FieldError(field, "validation.unknown_question", params))
            continue
        problem = _answer_problem(question, value)
        if problem is not None:
            errors.append(FieldError(field, *problem))
    return errors


def _answer_problem(question: QuestionDefinition, value: object) -> tuple[str, dict[str, Any]] | None:
    """Return the message key and parameters of what is wrong with ``value``, or None."""
    options = question.options or []
    not_option = ("validation.answer_not_option", {"options": ", ".join(options)})
    if question.type == "single_choice":
        if not isinstance(value, str):
            return "validation.answer_not_string", {}
        return None if value in options else not_option
    if question.type == "multiple_choice":
        if not isinstance(value, list) or not all(isinstance(choice, str) for choice in value):
            return "validation.answer_not_string_list", {}
        if any(choice not in options for choice in value):
            return not_option
        seen: set[str] = set()
        for choice in value:
            if choice in seen:
                return "validation.answer_repeated_option", {"option": choice}
            seen.add(choice)
        return None
    if question.type == "true_false":
        return None if isinstance(value, bool) else ("validation.answer_not_boolean", {})
    if question.type == "numeric":
        return None if _as_number(value) is not None else ("validation.answer_not_number", {})
    if not isinstance(value, str):
        return "validation.answer_not_string", {}
    if len(value) > MAX_TEXT_ANSWER_LENGTH:
        return "validation.too_long", {"max": MAX_TEXT_ANSWER_LENGTH}
    return None


def _is_correct(question_type: str, expected: object, tolerance: float | None, given: object) -> bool:
    # Anything validate_answers would reject is simply wrong here, so grading never raises.
    if question_type in ("single_choice", "true_false"):
        # `type(...) is` keeps 1 from matching True (and vice versa).
        return type(given) is type(expected) and given == expected
    if question_type == "multiple_choice":
        if not isinstance(given, list) or not isinstance(expected, list):
            return False
        if not all(isinstance(choice, str) for choice in given):
            return False  # also keeps unhashable members (objects, lists) away from set()
        return len(set(given)) == len(given) and set(given) == set(expected)
    if question_type == "numeric":
        number = _as_number(given)
        target = _as_number(expected)
        if number is None or target is None:
            return False
        slack = _NUMERIC_EPSILON * max(1.0, abs(target))
        return abs(number - target) <= (tolerance or 0.0) + slack
    if not isinstance(given, str) or len(given) > MAX_TEXT_ANSWER_LENGTH or not isinstance(expected, list):
        return False
    folded = normalize_text(given)
    return bool(folded) and any(folded == normalize_text(str(accepted)) for accepted in expected)


def _round_score(value: float) -> float:
    return round(value, _SCORE_DECIMALS) + 0.0  # + 0.0 turns -0.0 into 0.0


def _percentage(score: float, max_score: float) -> float:
    # Half-up on the shortest decimal repr: 13/32 is 40.625 and people expect 40.63, where round()
    # gives 40.62 (half-to-even).
    exact = Decimal(repr(score / max_score * 100))
    return float(exact.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)) + 0.0


def grade(exam: ExamDefinition, answers: Mapping[str, object]) -> Grading:
    """Grade ``answers`` against ``exam`` as SPEC.md describes (all-or-nothing per question).

    ``passed`` compares the rounded percentage, so it always agrees with the number shown.
    """
    graded: list[QuestionGrade] = []
    topic_points: dict[str, tuple[list[float], list[float]]] = {}
    for question in exam.questions:
        correct = question.id in answers and _is_correct(
            question.type, question.answer, question.tolerance, answers[question.id]
        )
        awarded = float(question.points) if correct else 0.0
        graded.append(QuestionGrade(question.id, correct, awarded, float(question.points)))
        earned, possible = topic_points.setdefault(question.topic, ([], []))
        earned.append(awarded)
        possible.append(float(question.points))
    topics = [
        TopicScore(
            topic,
            _round_score(math.fsum(earned)),
            _round_score(math.fsum(possible)),
            _percentage(math.fsum(earned), math.fsum(possible)),
        )
        for topic, (earned, possible) in topic_points.items()
    ]
    score = math.fsum(item.awarded for item in graded)
    max_score = math.fsum(item.max for item in graded)
    percentage = _percentage(score, max_score)
    return Grading(
        score=_round_score(score),
        max_score=_round_score(max_score),
        percentage=percentage,
        passed=percentage >= exam.pass_percentage,
        topics=topics,
        questions=graded,
    )


def correct_answers(exam: ExamDefinition) -> dict[str, AnswerValue]:
    """Return an answers mapping that earns full marks (demo, tests and benchmarks use it)."""
    answers: dict[str, AnswerValue] = {}
    for question in exam.questions:
        if question.type == "short_text":
            answers[question.id] = str(question.answer[0])
        elif question.type == "multiple_choice":
            answers[question.id] = list(question.answer)
        else:
            answers[question.id] = question.answer
    return answers
