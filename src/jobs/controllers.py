"""HTTP API of exam jobs: submit an exam, follow its job (poll or server-sent events), cancel it."""

from __future__ import annotations

import asyncio
import copy
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Annotated, Any
from uuid import UUID

import dramatiq
import msgspec
import structlog
from litestar import Controller, Request, Response, get, post
from litestar.background_tasks import BackgroundTask
from litestar.di import NamedDependency
from litestar.dto import MsgspecDTO
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import Example, Reference, Schema
from litestar.params import Body, BodyKwarg, HeaderParameter, Parameter
from litestar.response import ServerSentEvent
from litestar.types import SSEData
from litestar.typing import FieldDefinition
from sqlalchemy.ext.asyncio import AsyncSession

from core import metrics
from core.db import Database
from core.errors import MalformedRequestError, NotFoundError, ProblemDocument, ValidationFailedError
from core.settings import Settings
from core.web import PROBLEM_MEDIA_TYPE, request_locale
from exams.catalog_cache import ExamCache
from jobs.callbacks import callback_url_problems
from jobs.cancel import cancel_job
from jobs.dispatch import JobRef, dispatch, send_callbacks
from jobs.documents import STATUS_PATH, status_document
from jobs.progress import FINAL_STATUSES
from jobs.schemas import SUBMIT_EXAMPLE, StatusDocument, SubmitRequest
from jobs.services import JobService, JobStatusView, fetch_status
from jobs.submissions import check_against_exam, check_shape, decode_json, to_submission

if TYPE_CHECKING:
    from litestar._openapi.schema_generation import SchemaCreator

__all__ = ("ExamResultsController", "SubmitRequestDTO", "status_document")

POLL_SECONDS = 2
#: How often the event stream looks for changes, and the longest it stays open.
EVENTS_INTERVAL = 0.5
EVENTS_MAX_SECONDS = 3600
MAX_IDEMPOTENCY_KEY = 255


def problem_responses(**described: str) -> dict[int, ResponseSpec]:
    """OpenAPI responses of problem documents, by status code (``_404="…"``)."""
    return {
        int(code.lstrip("_")): ResponseSpec(
            data_container=ProblemDocument, description=text, media_type=PROBLEM_MEDIA_TYPE, generate_examples=False
        )
        for code, text in described.items()
    }


def _headers(job: JobStatusView, locale: str) -> dict[str, str]:
    headers = {"Cache-Control": "no-store", "Content-Language": locale}
    if job.status not in FINAL_STATUSES:
        headers["Retry-After"] = str(POLL_SECONDS)
    return headers


async def _find_job(database: Database, raw_id: str) -> JobStatusView:
    """The job's status columns; 404 for an unknown or malformed id."""
    try:
        job_id = UUID(raw_id)
    except ValueError:
        job_id = None
    job = None
    if job_id is not None:
        async with database.reader.connect() as connection:
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


class SubmitRequestDTO(MsgspecDTO[SubmitRequest]):
    """Reads the submit body as the API contract says, documented as :class:`SubmitRequest`.

    Litestar's own conversion would answer a 400 naming the first problem only. The contract is
    a 400 ``malformed-json`` problem for a body that is not JSON, an unusable ``Idempotency-Key``
    next, then a 422 listing every problem of the body's shape at once, in the request's
    language (:func:`check_shape`); the answers are kept as sent, for the per-question checks.
    """

    def decode_bytes(self, value: bytes) -> SubmitRequest:
        """The checked submission of a (non-empty) body."""
        data = decode_json(value)
        _idempotency_key(self.asgi_connection.headers.get("idempotency-key"))
        return check_shape(data)

    @classmethod
    def create_openapi_schema(
        cls, field_definition: FieldDefinition, handler_id: str, schema_creator: SchemaCreator
    ) -> Reference | Schema:
        """:class:`SubmitRequest`'s schema (from its type), inline in the request body, with the
        description and examples of the handler's ``Body``."""
        schema = schema_creator.for_field_definition(FieldDefinition.from_annotation(cls.model_type))
        if isinstance(schema, Reference):
            schema = copy.copy(schema_creator.schema_registry.from_reference(schema).schema)
        body = field_definition.kwarg_definition
        if isinstance(body, BodyKwarg):
            schema.description = body.description or schema.description
            if body.examples:
                schema.examples = [example.value for example in body.examples]
        return schema


async def _require_body(request: Request[Any, Any, Any]) -> None:
    """An empty body is malformed JSON (400): Litestar would not hand it to the DTO at all."""
    if not await request.body():
        raise MalformedRequestError


class ExamResultsController(Controller):
    """Exam submissions and their processing status."""

    path = "/api/exam-results"
    tags = ["exam-results"]  # noqa: RUF012

    @post(
        "/process",
        operation_id="SubmitExam",
        dto=SubmitRequestDTO,
        return_dto=None,
        before_request=_require_body,
        status_code=202,
        summary="Submit an exam for grading",
        response_description="Accepted: poll `Location` every 2 s (or listen to its `/events`).",
        parameters=[],
        responses=problem_responses(
            _400="The body is not JSON (`/problems/malformed-json`).",
            _413="The body is over 1 MiB (`/problems/payload-too-large`).",
            _422=(
                "The submission breaks a rule (`/problems/validation-error`, one `errors` entry per field; "
                "includes a `callback_url` not allowed by `CALLBACK_ALLOWED_HOSTS`), or an `Idempotency-Key` "
                "reused with another body (`/problems/idempotency-key-reused`)."
            ),
            _503="The database is unavailable; nothing was stored (`/problems/service-unavailable`).",
        ),
    )
    async def submit(  # noqa: PLR0917  (Litestar injects each dependency by name)
        self,
        request: Request[Any, Any, Any],
        db_session: NamedDependency[AsyncSession],
        database: NamedDependency[Database],
        broker: NamedDependency[dramatiq.Broker],
        exam_cache: NamedDependency[ExamCache],
        settings: NamedDependency[Settings],
        data: Annotated[
            SubmitRequest,
            Body(
                description="The submission (at most 1 MiB of JSON).",
                examples=[Example(summary="An answer of every question type", value=SUBMIT_EXAMPLE)],
            ),
        ],
        idempotency_key: Annotated[
            str | None,
            HeaderParameter(
                name="Idempotency-Key",
                required=False,
                description=(
                    "Up to 255 printable characters (a UUID is best). Same key and body: the same job again. "
                    "Same key, other body: 422."
                ),
            ),
        ] = None,
    ) -> Response[StatusDocument]:
        """Store the submission and queue it; answers 202 at once with the job's status document."""
        locale = request_locale(request)
        if data.callback_url is not None and (
            problems := callback_url_problems(data.callback_url, settings.callback_allowed_hosts)
        ):
            raise ValidationFailedError(problems)
        submission = to_submission(data, locale, _idempotency_key(idempotency_key))
        exam = await exam_cache.get(db_session, submission.exam_code)
        check_against_exam(submission, exam)
        job, created = await JobService(session=db_session).submit(submission)
        structlog.contextvars.bind_contextvars(
            job_id=str(job.job_id), exam_code=job.exam_code, step=job.current_step, attempt=job.attempts
        )
        background = None
        if created:
            metrics.JOBS_SUBMITTED.inc()
            background = BackgroundTask(dispatch, broker, database, [JobRef.of(job)], presumed_sent=True)
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
        database: NamedDependency[Database],
        job_id: str = Parameter(description="The `job_id` returned at submission (a UUID)."),
    ) -> Response[StatusDocument]:
        """Progress, current step, and the result or error once final; `Retry-After: 2` until then."""
        locale = request_locale(request)
        job = await _find_job(database, job_id)
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
        database: NamedDependency[Database],
        job_id: str = Parameter(description="The `job_id` returned at submission (a UUID)."),
    ) -> ServerSentEvent:
        """`progress` events (the status document) on every change, then `completed`, `failed` or
        `cancelled`, then the end."""
        locale = request_locale(request)
        job = await _find_job(database, job_id)
        uid = job.job_id
        first = status_document(job, locale)
        reader = database.reader

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
                if doc.status in FINAL_STATUSES:
                    sequence += 1
                    yield {"event": doc.status, "data": encoded.decode(), "id": str(sequence)}
                    return
                if time.monotonic() > deadline:
                    return
                await asyncio.sleep(EVENTS_INTERVAL)
                async with reader.connect() as connection:
                    fresh = await fetch_status(connection, uid)
                if fresh is None:
                    return
                doc = status_document(fresh, locale)

        return ServerSentEvent(
            stream(),
            retry_duration=POLL_SECONDS * 1000,
            headers={"Cache-Control": "no-store", "Content-Language": locale, "X-Accel-Buffering": "no"},
        )

    @post(
        "/status/{job_id:str}/cancel",
        operation_id="CancelExamJob",
        summary="Cancel a submission",
        status_code=200,
        responses=problem_responses(
            _404="No job with this id (`/problems/not-found`).",
            _409="The job already completed or failed (`/problems/already-finished`).",
        ),
    )
    async def cancel(
        self,
        request: Request[Any, Any, Any],
        database: NamedDependency[Database],
        broker: NamedDependency[dramatiq.Broker],
        job_id: str = Parameter(description="The `job_id` returned at submission (a UUID)."),
    ) -> Response[StatusDocument]:
        """Stop a pending or processing job (a running one stops within 2 s; nothing is retried).

        Answers the status document with `status: "cancelled"`; cancelling a cancelled job again
        answers the same (idempotent).
        """
        locale = request_locale(request)
        try:
            uid = UUID(job_id)
        except ValueError:
            uid = None
        cancellation = await cancel_job(database, uid) if uid is not None else None
        if cancellation is None:
            raise NotFoundError("problem.not_found.job", job_id=job_id[:64])
        background = None
        if cancellation.delivery_id is not None:
            background = BackgroundTask(send_callbacks, broker, [cancellation.delivery_id])
        job = cancellation.job
        return Response(status_document(job, locale), headers=_headers(job, locale), background=background)
