"""The status document of SPEC.md, built from a job's status columns in the request's language.

Shared by the API (``jobs.controllers``), the completion callbacks (``jobs.callbacks``) and the
cancel operation, so a callback's body is exactly what ``GET …/status/{job_id}`` answers.
"""

from __future__ import annotations

from typing import cast

from i18n import gettext
from jobs.errors import render_error
from jobs.progress import JobStatus, Step
from jobs.schemas import ErrorCode, JobResult, StatusDocument
from jobs.services import JobStatusView

__all__ = ("STATUS_PATH", "error_message", "status_document")

STATUS_PATH = "/api/exam-results/status"


def error_message(job: JobStatusView, locale: str) -> str | None:
    """The job's error in ``locale``; a row stored before error codes keeps its English message."""
    if job.error_code is None or job.error_params is None:
        return job.error_message
    return render_error(job.error_code, job.error_params, locale)


def status_document(job: JobStatusView, locale: str) -> StatusDocument:
    """The status document of SPEC.md for ``job``, labels and error message in ``locale``."""
    return StatusDocument(
        job_id=str(job.job_id),
        exam_code=job.exam_code,
        student_id=job.student_id,
        status=cast("JobStatus", job.status),
        progress=job.progress,
        current_step=cast("Step", job.current_step),
        current_step_label=gettext(f"step.{job.current_step}", locale),
        attempts=job.attempts,
        result=cast("JobResult | None", job.result),
        error_message=error_message(job, locale),
        error_code=cast("ErrorCode | None", job.error_code),
        created_at=job.created_at,
        started_at=job.started_at,
        completed_at=job.completed_at,
        status_url=f"{STATUS_PATH}/{job.job_id}",
    )
