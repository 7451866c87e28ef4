"""The exam catalog's domain types: an exam, its questions, a grading and its parts.

These are plain msgspec structs shared by the catalog loader, the grader, the API and the
pipeline; the database stores an exam's questions as their JSON encoding.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

__all__ = (
    "AnswerValue",
    "ExamDefinition",
    "FieldError",
    "Grading",
    "QuestionDefinition",
    "QuestionGrade",
    "QuestionType",
    "TopicScore",
)

QuestionType = Literal["single_choice", "multiple_choice", "true_false", "numeric", "short_text"]
#: What a student may send for one question (the JSON types of SPEC.md's example).
AnswerValue = str | list[str] | float | int | bool


class QuestionDefinition(msgspec.Struct, frozen=True, kw_only=True):
    """One question with its correct answer (never sent to students)."""

    id: str
    topic: str
    type: QuestionType
    points: float
    prompt: dict[str, str]
    #: single_choice / multiple_choice: the choices offered.
    options: list[str] | None = None
    #: str (single_choice), list[str] (multiple_choice / short_text accepted answers),
    #: bool (true_false), float (numeric).
    answer: Any = None
    #: numeric only: ``|given - answer| <= tolerance`` is correct.
    tolerance: float | None = None


class ExamDefinition(msgspec.Struct, frozen=True, kw_only=True):
    """One exam as loaded from a catalog file."""

    code: str
    title: dict[str, str]
    questions: list[QuestionDefinition]
    status: Literal["open", "closed"] = "open"
    pass_percentage: float = 60.0


class FieldError(msgspec.Struct, frozen=True):
    """A validation problem at one field, as an i18n message key and its parameters."""

    field: str
    key: str
    params: dict[str, Any] = msgspec.field(default_factory=dict)


class QuestionGrade(msgspec.Struct, frozen=True):
    """How one question was graded."""

    question_id: str
    correct: bool
    awarded: float
    max: float


class TopicScore(msgspec.Struct, frozen=True):
    """Score per topic, in the order topics first appear in the exam."""

    topic: str
    score: float
    max_score: float
    percentage: float


class Grading(msgspec.Struct, frozen=True, kw_only=True):
    """The full grading of one submission (the pipeline keeps it across retries)."""

    score: float
    max_score: float
    percentage: float
    passed: bool
    topics: list[TopicScore]
    questions: list[QuestionGrade]
