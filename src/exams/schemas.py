"""Response bodies of the exams catalog API (they shape the OpenAPI docs)."""

from __future__ import annotations

from typing import Literal

import msgspec

from exams.definitions import QuestionType

__all__ = ("ExamDetail", "ExamList", "ExamSummary", "QuestionPublic")


class ExamSummary(msgspec.Struct, kw_only=True):
    """One exam of the catalog."""

    code: str
    title: str
    question_count: int
    status: Literal["open", "closed"]
    pass_percentage: float


class ExamList(msgspec.Struct):
    """The exam catalog."""

    items: list[ExamSummary]


class QuestionPublic(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A question as students see it (no correct answer)."""

    id: str
    topic: str
    type: QuestionType
    points: float
    prompt: str
    options: list[str] | None = None
    tolerance: float | None = None


class ExamDetail(msgspec.Struct, kw_only=True):
    """An exam with its questions, without the correct answers."""

    code: str
    title: str
    status: Literal["open", "closed"]
    pass_percentage: float
    questions: list[QuestionPublic]
