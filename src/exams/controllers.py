"""HTTP API: submit an exam, follow its job (poll or server-sent events), browse the catalog."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import msgspec
import structlog
from litestar import Controller, Request, Response, get, post
from litestar.background_tasks import BackgroundTask
from litestar.openapi.spec import Example, OpenAPIMediaType, Operation, RequestBody, Schema
from litestar.openapi.spec.enums import OpenAPIType
from litestar.params import Parameter
from litestar.response import ServerSentEvent
from litestar.types import SSEData
from sqlalchemy.ext.asyncio import AsyncSession

from core import metrics
from core.errors import MalformedRequestError, NotFoundError, ValidationFailedError
from core.web import request_locale
from exams.catalog_cache import ExamCache
from exams.schemas import ExamDetail, ExamList, ExamSummary, QuestionPublic, StatusDocument
from exams.services import ExamService
from exams.submissions import check_against_exam, check_shape
from i18n import gettext, localized
from jobs.dispatch import JobRef, dispatch
from jobs.services import JobService, JobStatusView, fetch_status

__all__ = ("ExamResultsController", "ExamsController", "status_document")

STATUS_PATH = "/api/exam-results/status"
FINAL_STATUSES = frozenset({"completed", "failed"})
POLL_SECONDS = 2
#: How often the event stream looks for changes, and the longest it stays open.
EVENTS_INTERVAL = 0.5
EVENTS_MAX_SECONDS = 3600
MAX_IDEMPOTENCY_KEY = 255


def status_document(job: JobStatusView, locale: str) -> StatusDocument:
    """The status document of SPEC.md for ``job``, labels in ``locale``."""
    return StatusDocument(
        job_id=str(job.job_id),
        exam_code=job.exam_code,
        student_id=job.student_id,
        status=job.status,  # type: ignore[arg-type]
        progress=job.progress,
        current_step=job.current_step,
        current_step_label=gettext(f"step.{job.current_step}", locale),
        attempts=job.attempts,
        result=job.result,
        error_message=job.error_message,
        created_at=job.created_at,
        started_at=job.started_at,
        completed_at=job.completed_at,
        status_url=f"{STATUS_PATH}/{job.job_id}",
    )


def _headers(job: JobStatusView, locale: str) -> dict[str, str]:
    headers = {"Cache-Control": "no-store", "Content-Language": locale}
    if job.status not in FINAL_STATUSES:
        headers["Retry-After"] = str(POLL_SECONDS)
    return headers


async def _find_job(request: Request[Any, Any, Any], raw_id: str) -> JobStatusView:
    """The job's status columns; 404 for an unknown or malformed id."""
    try:
        job_id = UUID(raw_id)
    except ValueError:
        job_id = None
    job = None
    if job_id is not None:
        async with request.app.state.read_engine.connect() as connection:
            job = await fetch_status(connection, job_id)
    if job is None:
        raise NotFoundError("problem.not_found.job", job_id=raw_id[:64])
    return job


def _idempotency_key(raw: str | None) -> str | None:
    """The key without the quotes of a structured-field string; 422 when unusable."""
    if raw is None:
        return None
    key = raw.strip().strip('"')
    if not key:
        return None
    if len(key) > MAX_IDEMPOTENCY_KEY or not key.isprintable():
        raise ValidationFailedError([("Idempotency-Key", "validation.idempotency_key", {"max": MAX_IDEMPOTENCY_KEY})])
    return key


@dataclass
class _SubmitOperation(Operation):
    """Documents the JSON body the submit handler reads itself (it parses and checks by hand
    so that malformed JSON is 400 and a wrong shape is 422 with localised field errors)."""

    def __post_init__(self) -> None:
        schema = Schema(
            type=OpenAPIType.OBJECT,
            required=["exam_code", "student_id", "answers"],
            properties={
                "exam_code": Schema(type=OpenAPIType.STRING, max_length=64, description="Code of an open exam."),
                "student_id": Schema(type=OpenAPIType.STRING, max_length=128, description="The student's id."),
                "answers": Schema(
                    type=OpenAPIType.OBJECT,
                    description=(
                        "Answers by question id: string (single_choice, short_text), array of strings "
                        "(multiple_choice), number (numeric) or boolean (true_false)."
                    ),
                ),
            },
        )
        example = {
            "exam_code": "MATH-101",
            "student_id": "s-1042",
            "answers": {"q1": "b", "q2": ["a", "c"], "q3": 3.14, "q4": True, "q5": "photosynthesis"},
        }
        self.request_body = RequestBody(
            required=True,
            description="The submission (at most 1 MiB).",
            content={"application/json": OpenAPIMediaType(schema=schema, examples={"math": Example(value=example)})},
        )


class ExamResultsController(Controller):
    """Exam submissions and their processing status."""

    path = "/api/exam-results"
    tags = ["exam-results"]  # noqa: RUF012

    @post(
        "/process",
        operation_id="SubmitExam",
        operation_class=_SubmitOperation,
        status_code=202,
        summary="Submit an exam for grading",
        response_description="Accepted: poll `Location` every 2 s (or listen to its `/events`).",
        parameters=[],
    )
    async def submit(
        self,
        request: Request[Any, Any, Any],
        db_session: AsyncSession,
        idempotency_key: str | None = Parameter(
            header="Idempotency-Key",
            required=False,
            description=(
                "Up to 255 printable characters (a UUID is best). Same key and body: the same job again. "
                "Same key, other body: 422."
            ),
        ),
    ) -> Response[StatusDocument]:
        """Store the submission and queue it; answers 202 at once with the job's status document."""
        locale = request_locale(request)
        body = await request.body()
        try:
            data = msgspec.json.decode(body)
        except (msgspec.DecodeError, RecursionError):
            raise MalformedRequestError from None
        submission = check_shape(data, locale, _idempotency_key(idempotency_key))
        exam = await ExamCache.get(request.app, db_session, submission.exam_code)
        check_against_exam(submission, exam)
        job, created = await JobService(session=db_session).submit(submission)
        structlog.contextvars.bind_contextvars(
            job_id=str(job.job_id), exam_code=job.exam_code, step=job.current_step, attempt=job.attempts
        )
        background = None
        if created:
            metrics.JOBS_SUBMITTED.inc()
            state = request.app.state
            background = BackgroundTask(dispatch, state.broker, state.engine, [JobRef.of(job)], presumed_sent=True)
        headers = _headers(job, locale)
        headers["Location"] = f"{STATUS_PATH}/{job.job_id}"
        headers["Retry-After"] = str(POLL_SECONDS)
        return Response(status_document(job, locale), status_code=202, headers=headers, background=background)

    @get(
        "/status/{job_id:str}",
        operation_id="GetExamResultStatus",
        summary="Processing status of a submission",
        cache=False,
    )
    async def status(
        self,
        request: Request[Any, Any, Any],
        job_id: str = Parameter(description="The `job_id` returned at submission (a UUID)."),
    ) -> Response[StatusDocument]:
        """Progress, current step, and the result or error once final; `Retry-After: 2` until then."""
        locale = request_locale(request)
        job = await _find_job(request, job_id)
        return Response(status_document(job, locale), headers=_headers(job, locale))

    @get(
        "/status/{job_id:str}/events",
        operation_id="StreamExamResultStatus",
        summary="Server-sent events of a submission's progress",
        media_type="text/event-stream",
        cache=False,
    )
    async def events(
        self,
        request: Request[Any, Any, Any],
        job_id: str = Parameter(description="The `job_id` returned at submission (a UUID)."),
    ) -> ServerSentEvent:
        """`progress` events (the status document) on every change, then `completed` or `failed`, then the end."""
        locale = request_locale(request)
        job = await _find_job(request, job_id)
        uid = job.job_id
        first = status_document(job, locale)
        read_engine = request.app.state.read_engine

        async def stream() -> AsyncIterator[SSEData]:
            doc = first
            last: bytes | None = None
            deadline = time.monotonic() + EVENTS_MAX_SECONDS
            sequence = 0
            while True:
                encoded = msgspec.json.encode(doc)
                if encoded != last:
                    sequence += 1
                    yield {"event": "progress", "data": encoded.decode(), "id": str(sequence)}
                    last = encoded
                if doc.status in ("completed", "failed"):
                    sequence += 1
                    yield {"event": doc.status, "data": encoded.decode(), "id": str(sequence)}
                    return
                if time.monotonic() > deadline:
                    return
                await asyncio.sleep(EVENTS_INTERVAL)
                async with read_engine.connect() as connection:
                    fresh = await fetch_status(connection, uid)
                if fresh is None:
                    return
                doc = status_document(fresh, locale)

        return ServerSentEvent(
            stream(),
            retry_duration=POLL_SECONDS * 1000,
            headers={"Cache-Control": "no-store", "Content-Language": locale, "X-Accel-Buffering": "no"},
        )


class ExamsController(Controller):
    """The exam catalog, without correct answers."""

    path = "/api/exams"
    tags = ["exams"]  # noqa: RUF012

    @get("/", operation_id="ListExams", summary="List exams", cache=False)
    async def list_exams(self, request: Request[Any, Any, Any], db_session: AsyncSession) -> ExamList:
        """Every exam: code, title (in the request's language), question count, open or closed."""
        locale = request_locale(request)
        rows = await ExamService(session=db_session).list_exams()
        return ExamList(
            items=[
                ExamSummary(
                    code=row.code,
                    title=localized(row.title, locale, row.code),
                    question_count=row.question_count,
                    status=row.status,  # type: ignore[arg-type]
                    pass_percentage=row.pass_percentage,
                )
                for row in rows
            ]
        )

    @get("/{code:str}", operation_id="GetExam", summary="One exam with its questions", cache=False)
    async def get_exam(
        self,
        request: Request[Any, Any, Any],
        db_session: AsyncSession,
        code: str = Parameter(description="Exam code, e.g. MATH-101."),
    ) -> ExamDetail:
        """The exam's questions with prompts in the request's language and no correct answers."""
        locale = request_locale(request)
        exam = await ExamService(session=db_session).get_definition(code) if code.isprintable() else None
        if exam is None:
            raise NotFoundError("problem.not_found.exam", code=code[:64])
        return ExamDetail(
            code=exam.code,
            title=localized(exam.title, locale, exam.code),
            status=exam.status,
            pass_percentage=exam.pass_percentage,
            questions=[
                QuestionPublic(
                    id=q.id,
                    topic=q.topic,
                    type=q.type,
                    points=q.points,
                    prompt=localized(q.prompt, locale, ""),
                    options=q.options,
                    tolerance=q.tolerance if q.type == "numeric" else None,
                )
                for q in exam.questions
            ],
        )
