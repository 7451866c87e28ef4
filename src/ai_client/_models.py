"""What the pipeline hands to the AI client and what it gets back."""

from __future__ import annotations

from typing import Literal

import msgspec

from exams.definitions import Grading

__all__ = ("Priority", "Recommendation", "RecommendationRequest")

Priority = Literal["high", "medium", "low"]


class Recommendation(msgspec.Struct, frozen=True):
    """One study recommendation; its JSON form is the ``result.recommendations`` item of SPEC.md."""

    topic: str
    priority: Priority
    text: str


class RecommendationRequest(msgspec.Struct, frozen=True):
    """What the recommendations are about; carries no student id and no answers."""

    exam_code: str
    exam_title: str
    #: The student's language (``en`` or ``ar``; a region such as ``ar-EG`` is fine).
    locale: str
    grading: Grading
