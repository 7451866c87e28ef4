"""Request and response bodies of the exam-results API (they shape the OpenAPI docs)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec

__all__ = (
    "MAX_CALLBACK_URL_LENGTH",
    "MAX_CODE_LENGTH",
    "MAX_ID_LENGTH",
    "SUBMIT_EXAMPLE",
    "Answer",
    "StatusDocument",
    "SubmitRequest",
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


class StatusDocument(msgspec.Struct, kw_only=True):
    """Where a job is: poll it every 2 s (``Retry-After``) until ``status`` is final."""

    job_id: str
    exam_code: str
    student_id: str
    status: Literal["pending", "processing", "completed", "failed", "cancelled"]
    progress: int
    """0-100, never decreasing."""
    current_step: str
    """queued, validating_exam, processing_answers, getting_ai_recommendations,
    finalizing_results, completed, failed or cancelled."""
    current_step_label: str
    """``current_step`` in the request's language."""
    attempts: int
    result: dict[str, Any] | None
    """When completed: score, max_score, percentage, passed, topics, questions,
    recommendations, recommendations_source, processed_at."""
    error_message: str | None
    """Why the job failed (or why the last attempt did), in the request's language."""
    error_code: str | None
    """A stable machine code for ``error_message`` (``ai_unavailable``, ``retries_exhausted``,
    ``exam_closed``, ``exam_missing``, ``answers_invalid``, ``time_limit``, ``internal_error``, …);
    null unless an error is set."""
    created_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    status_url: str
