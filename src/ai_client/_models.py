"""What the pipeline hands to the AI client and what it gets back."""

from __future__ import annotations

from typing import Literal

import msgspec

__all__ = ("GradeSummary", "Priority", "Recommendation", "RecommendationRequest", "TopicScore")

Priority = Literal["high", "medium", "low"]


class Recommendation(msgspec.Struct, frozen=True):
    """One study recommendation; its JSON form is the ``result.recommendations`` item of SPEC.md."""

    topic: str
    priority: Priority
    text: str


class TopicScore(msgspec.Struct, frozen=True):
    """How the student did on one topic (the AI sees topics, never single answers)."""

    topic: str
    score: float
    max_score: float
    percentage: float


class GradeSummary(msgspec.Struct, frozen=True, kw_only=True):
    """The grade the recommendations are about (any richer grading converts to it by field name)."""

    score: float
    max_score: float
    percentage: float
    passed: bool
    topics: list[TopicScore]


class RecommendationRequest(msgspec.Struct, frozen=True):
    """What the recommendations are about; carries no student id and no answers."""

    exam_code: str
    exam_title: str
    #: The student's language (``en`` or ``ar``; a region such as ``ar-EG`` is fine).
    locale: str
    grading: GradeSummary
