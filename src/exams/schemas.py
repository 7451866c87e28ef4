"""Request and response bodies of the exam-results and exams APIs (they shape the OpenAPI docs)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

import msgspec

__all__ = (
    "ExamDetail",
    "ExamList",
    "ExamSummary",
    "QuestionPublic",
    "Recommendation",
    "StatusDocument",
    "SubmitRequest",
)


class SubmitRequest(msgspec.Struct, kw_only=True):
    """An exam submission."""

    exam_code: str = msgspec.field()
    """Code of an open exam, e.g. ``MATH-101``."""
    student_id: str
    """The school's id of the student (1-128 characters)."""
    answers: dict[str, str | list[str] | float | bool]
    """Answers by question id: a string (single choice, short text), a list of strings
    (multiple choice), a number (numeric) or a boolean (true/false). Unanswered questions score 0."""


class Recommendation(msgspec.Struct):
    """One study recommendation."""

    topic: str
    priority: Literal["high", "medium", "low"]
    text: str


class StatusDocument(msgspec.Struct, kw_only=True):
    """Where a job is: poll it every 2 s (``Retry-After``) until ``status`` is final."""

    job_id: str
    exam_code: str
    student_id: str
    status: Literal["pending", "processing", "completed", "failed"]
    progress: int
    """0-100, never decreasing."""
    current_step: str
    """queued, validating_exam, processing_answers, getting_ai_recommendations,
    finalizing_results, completed or failed."""
    current_step_label: str
    """``current_step`` in the request's language."""
    attempts: int
    result: dict[str, Any] | None
    """When completed: score, max_score, percentage, passed, topics, questions,
    recommendations, recommendations_source, processed_at."""
    error_message: str | None
    created_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    status_url: str


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
    type: str
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
