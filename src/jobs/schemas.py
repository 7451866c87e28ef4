"""Request and response bodies of the exam-results API (they shape the OpenAPI docs)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal, TypedDict

import msgspec
from litestar.openapi.spec import OpenAPIFormat
from litestar.params import KwargDefinition

from jobs.progress import JobStatus, Step

__all__ = (
    "MAX_CALLBACK_URL_LENGTH",
    "MAX_CODE_LENGTH",
    "MAX_ID_LENGTH",
    "SUBMIT_EXAMPLE",
    "Answer",
    "ErrorCode",
    "JobResult",
    "QuestionResult",
    "RecommendationItem",
    "RecommendationsSource",
    "StatusDocument",
    "SubmitRequest",
    "TopicResult",
)

MAX_CODE_LENGTH = 64
MAX_ID_LENGTH = 128
MAX_CALLBACK_URL_LENGTH = 2048

#: One answer: a string (single choice, short text), a list of strings (multiple choice),
#: a number (numeric) or a boolean (true/false).
Answer = str | list[str] | float | bool

SUBMIT_EXAMPLE: dict[str, Any] = {
    "exam_code": "MATH-101",
    "student_id": "s-1042",
    "answers": {"q1": "b", "q2": ["a", "c"], "q3": 3.14, "q4": True, "q5": "photosynthesis"},
}


class SubmitRequest(msgspec.Struct, kw_only=True):
    """An exam submission.

    The types and limits below are the documented contract (OpenAPI). The API checks them
    itself (``jobs.submissions.check_shape``) so that every problem is reported at once as a
    localised 422; an instance built there keeps the answers exactly as sent, and the answers
    are then checked against the exam's questions.
    """

    exam_code: Annotated[
        str,
        msgspec.Meta(
            min_length=1,
            max_length=MAX_CODE_LENGTH,
            description="Code of an open exam, e.g. `MATH-101` (printable characters).",
        ),
    ]
    student_id: Annotated[
        str,
        msgspec.Meta(
            min_length=1,
            max_length=MAX_ID_LENGTH,
            description="The school's id of the student (1-128 printable characters).",
        ),
    ]
    answers: Annotated[
        dict[str, Answer],
        msgspec.Meta(
            description=(
                "Answers by question id: a string (single_choice, short_text), an array of strings "
                "(multiple_choice), a number (numeric) or a boolean (true_false). Unanswered questions score 0."
            )
        ),
    ]
    callback_url: (
        Annotated[
            str,
            msgspec.Meta(
                max_length=MAX_CALLBACK_URL_LENGTH,
                description=(
                    "Optional `https://` (or `http://`) URL on a host of `CALLBACK_ALLOWED_HOSTS`: the final status "
                    "document is POSTed there (signed `X-Exams-Signature`, see the client guide)."
                ),
            ),
        ]
        | None
    ) = None


#: ``error_code``: every code a job's error can have (``jobs.errors.ERROR_CODES``).
ErrorCode = Literal[
    "ai_busy",
    "ai_unavailable",
    "ai_invalid_answer",
    "answers_invalid",
    "database_unavailable",
    "exam_closed",
    "exam_missing",
    "internal_error",
    "retries_exhausted",
    "temporary_error",
    "time_limit",
]
#: ``ai``; ``rule_based`` when the AI is disabled; ``rule_based_fallback`` when it could not answer.
RecommendationsSource = Literal["ai", "rule_based", "rule_based_fallback"]
_DATE_TIME = KwargDefinition(format=OpenAPIFormat.DATE_TIME, description="When the result was made (UTC, RFC 3339).")


class TopicResult(TypedDict):
    """The grade of one topic (the sum of its questions)."""

    topic: str
    score: float
    max_score: float
    percentage: float


class QuestionResult(TypedDict):
    """The grade of one question: its full points or nothing (``max``)."""

    question_id: str
    correct: bool
    awarded: float
    max: float


class RecommendationItem(TypedDict):
    """One study recommendation."""

    topic: str
    priority: Literal["high", "medium", "low"]
    text: str


class _JobResultFields(TypedDict):
    score: float
    max_score: float
    percentage: float
    passed: bool
    topics: list[TopicResult]
    questions: list[QuestionResult]
    recommendations: list[RecommendationItem]
    recommendations_source: RecommendationsSource
    processed_at: Annotated[str, _DATE_TIME]


class JobResult(_JobResultFields, total=False):
    """A completed job's grade and study recommendations (kept as stored: a plain JSON object).

    ``questions`` lists every question of the exam, unanswered ones with ``correct: false``.
    ``recommendations_note`` is there only with ``recommendations_source: rule_based_fallback``:
    a sentence, in the submission's language, saying the AI tutor was unavailable.
    """

    # Optional through ``total=False``: ``NotRequired`` is lost on a postponed annotation (3.11).
    recommendations_note: str


class StatusDocument(msgspec.Struct, kw_only=True):
    """Where a job is: poll it every 2 s (``Retry-After``) until ``status`` is final."""

    job_id: Annotated[str, KwargDefinition(format=OpenAPIFormat.UUID, description="The job's id.")]
    exam_code: str
    student_id: str
    status: JobStatus
    progress: Annotated[int, msgspec.Meta(ge=0, le=100, description="0-100, never decreasing.")]
    current_step: Annotated[
        Step,
        msgspec.Meta(
            description=(
                "The pipeline step (progress 0, 0-5, 5-20, 20-90, 90-100, then 100 when completed); `failed` and "
                "`cancelled` keep the progress where the job stopped."
            )
        ),
    ]
    current_step_label: Annotated[str, msgspec.Meta(description="`current_step` in the request's language.")]
    attempts: Annotated[int, msgspec.Meta(ge=0, description="Attempts made so far (retries included).")]
    result: JobResult | None
    """When completed: the grade and the study recommendations; null before."""
    error_message: Annotated[
        str | None,
        msgspec.Meta(description="Why the job failed (or why the last attempt did), in the request's language."),
    ]
    error_code: Annotated[
        ErrorCode | None,
        msgspec.Meta(description="A stable machine code for `error_message`; null unless an error is set."),
    ]
    created_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    status_url: Annotated[str, msgspec.Meta(description="This document's path (`GET` it to poll).")]
