"""Helpers of the in-process pipeline tests (their fixtures are in conftest.py)."""

from __future__ import annotations

from uuid import UUID

from jobs.models import ExamProcessingJob
from jobs.pipeline import PipelineRuntime
from jobs.services import JobService, Submission
from support import MATH_ANSWERS


async def submit(runtime: PipelineRuntime) -> UUID:
    """A new MATH-101 job with all answers right: its id."""
    async with runtime.database.transaction() as session:
        job, _ = await JobService(session=session).submit(
            Submission(exam_code="MATH-101", student_id="s-1", answers=dict(MATH_ANSWERS))
        )
        return job.job_id


async def load(runtime: PipelineRuntime, job_id: UUID) -> ExamProcessingJob:
    """The job's row as it is now."""
    async with runtime.database.transaction() as session:
        job = await JobService(session=session).get_by_job_id(job_id)
    assert job is not None
    return job
