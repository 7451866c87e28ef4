"""HTTP API of exam jobs: submit an exam, follow its job (poll or server-sent events), cancel it."""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Annotated, Any
from uuid import UUID

import dramatiq
import structlog
from litestar import Controller, Request, Response, get, post
from litestar.background_tasks import BackgroundTask
from litestar.di import NamedDependency
from litestar.dto import MsgspecDTO
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import Example, Link, OpenAPIFormat, OpenAPIType, Reference, Schema
from litestar.params import Body, BodyKwarg, HeaderParameter, Parameter
from litestar.response import Stream
from litestar.typing import FieldDefinition
from sqlalchemy.ext.asyncio import AsyncSession

from access.principal import Principal
from access.web import SUBMIT_OPT, auth_headers, auth_responses
from core import metrics
from core.db import Database
from core.errors import MalformedRequestError, NotFoundError, ValidationFailedError
from core.openapi import Header, documented, event_stream_schema, problem_responses
from core.settings import Settings
from core.web import request_locale
from exams.catalog_cache import ExamCache
from jobs.callbacks import callback_url_problems
from jobs.cancel import cancel_job
from jobs.dispatch import JobRef, dispatch, send_callbacks
from jobs.documents import STATUS_PATH, status_document
from jobs.live import JobWatch, LiveJobs, status_events
from jobs.progress import FINAL_STATUSES
from jobs.schemas import SUBMIT_EXAMPLE, StatusDocument, SubmitRequest
from jobs.services import JobService, JobStatusView, fetch_status
from jobs.submissions import check_against_exam, check_shape, decode_json, to_submission

if TYPE_CHECKING:
    from litestar._openapi.schema_generation import SchemaCreator

__all__ = ("ExamResultsController", "SubmitRequestDTO", "status_document")

POLL_SECONDS = 2
MAX_IDEMPOTENCY_KEY = 255


def _headers(job: JobStatusView, locale: str) -> dict[str, str]:
    headers = {"Cache-Control": "no-store", "Content-Language": locale}
    if job.status not in FINAL_STATUSES:
        headers["Retry-After"] = str(POLL_SECONDS)
    return headers


async def _find_job(database: Database, raw_id: str, principal: Principal) -> JobStatusView:
    """The job's status columns; 404 for an unknown or malformed id, and for a job the caller
    may not see (another token's: the same answer as an unknown id, so ids cannot be probed)."""
    try:
        job_id = UUID(raw_id)
    except ValueError:
        job_id = None
    job = None
    if job_id is not None:
        async with database.reader.connect() as connection:
            job = await fetch_status(connection, job_id)
    if job is None or not principal.sees(job.owner):
        raise NotFoundError("problem.not_found.job", job_id=raw_id[:64])
    return job


async def _watch_job(live: LiveJobs, raw_id: str, principal: Principal) -> JobWatch:
    """A watch of the job, its first row read; 404 as for :func:`_find_job`."""
    try:
        job_id = UUID(raw_id)
    except ValueError:
        raise NotFoundError("problem.not_found.job", job_id=raw_id[:64]) from None
    watch = live.watch(job_id)
    try:
        job = await watch.current()
    except BaseException:
        watch.close()
        raise
    if job is None or not principal.sees(job.owner):
        watch.close()
        raise NotFoundError("problem.not_found.job", job_id=raw_id[:64])
    return watch


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
        schema.additional_properties = False  # check_shape rejects unknown fields (422)
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


_JOB_ID_DOC = "The `job_id` returned at submission (a UUID; anything else is a `404`)."
_UUID = {"format": OpenAPIFormat.UUID}
_NOT_FOUND_JOB = (
    "No job with this id, the id is not a UUID, or the job is another token's (a token without `read_all`) "
    "(`/problems/not-found`)."
)
_UNAVAILABLE = "The database is unavailable (`/problems/service-unavailable`, with `Retry-After`)."
_NO_STORE = Header("Always `no-store`.", required=True)
_RETRY_AFTER = Header(
    f"Seconds to wait before polling again ({POLL_SECONDS}); sent while the job is not final.",
    type=OpenAPIType.INTEGER,
)
_EVENT_SCHEMA = event_stream_schema(
    ("progress", "completed", "failed", "cancelled"),
    Reference(ref="#/components/schemas/StatusDocument"),
    "One event: `data` is the status document (`progress` on every change, then the final status).",
)
#: Where a submission's ``job_id`` leads (OpenAPI links, also followed by Schemathesis' stateful tests).
_JOB_LINKS = {
    name: Link(operation_id=operation_id, parameters={"job_id": "$response.body#/job_id"}, description=text)
    for name, operation_id, text in (
        ("status", "GetExamResultStatus", "Poll the job's status document."),
        ("events", "StreamExamResultStatus", "Follow the job as server-sent events."),
        ("cancel", "CancelExamJob", "Cancel the job."),
        ("result", "GetExamResult", "The result, once the job has completed."),
    )
}


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
        response_description=(
            "Accepted (stored before this answer): the job's status document. Poll `Location` every 2 s "
            "(or listen to its `/events`). The same `Idempotency-Key` and body answer the same job again."
        ),
        parameters=[],
        opt=SUBMIT_OPT,
        responses=auth_responses(submit=True)
        | problem_responses(
            _400="The body is not JSON (`/problems/malformed-json`).",
            _413="The body is over 1 MiB (`/problems/payload-too-large`).",
            _422=(
                "The submission breaks a rule (`/problems/validation-error`, one `errors` entry per field; "
                "includes a `callback_url` not allowed by `CALLBACK_ALLOWED_HOSTS`), or an `Idempotency-Key` "
                "reused with another body (`/problems/idempotency-key-reused`)."
            ),
            _503="The database is unavailable; nothing was stored (`/problems/service-unavailable`).",
        ),
        operation_class=documented(
            headers={
                202: {
                    "Location": Header("The job's status document: `/api/exam-results/status/{job_id}`.", True),
                    "Retry-After": Header(
                        f"Seconds to wait before the first poll ({POLL_SECONDS}).", True, OpenAPIType.INTEGER
                    ),
                    "Cache-Control": _NO_STORE,
                },
                **auth_headers(submit=True),
            },
            links={202: _JOB_LINKS},
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
        principal: NamedDependency[Principal],
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
                schema_extra={"max_length": MAX_IDEMPOTENCY_KEY},
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
        submission = to_submission(data, locale, _idempotency_key(idempotency_key), owner=principal.owner)
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
        response_description="The job's status document.",
        responses=auth_responses() | problem_responses(_404=_NOT_FOUND_JOB, _503=_UNAVAILABLE),
        operation_class=documented(
            headers={200: {"Retry-After": _RETRY_AFTER, "Cache-Control": _NO_STORE}, **auth_headers()}
        ),
    )
    async def status(
        self,
        request: Request[Any, Any, Any],
        database: NamedDependency[Database],
        principal: NamedDependency[Principal],
        job_id: str = Parameter(description=_JOB_ID_DOC, schema_extra=_UUID),
    ) -> Response[StatusDocument]:
        """Progress, current step, and the result or error once final; `Retry-After: 2` until then."""
        locale = request_locale(request)
        job = await _find_job(database, job_id, principal)
        return Response(status_document(job, locale), headers=_headers(job, locale))

    @get(
        "/status/{job_id:str}/events",
        operation_id="StreamExamResultStatus",
        summary="Server-sent events of a submission's progress",
        media_type="text/event-stream",
        cache=False,
        responses={
            200: ResponseSpec(
                data_container=str,
                media_type="text/event-stream",
                description=(
                    "Server-sent events, each `data` the status document as JSON: `progress` first and on "
                    "every change, then `completed`, `failed` or `cancelled`, then the stream ends."
                ),
                generate_examples=False,
            ),
            **auth_responses(),
            **problem_responses(_404=_NOT_FOUND_JOB, _503=_UNAVAILABLE),
        },
        operation_class=documented(
            headers={200: {"Cache-Control": _NO_STORE}, **auth_headers()},
            content={200: {"text/event-stream": _EVENT_SCHEMA}},
        ),
    )
    async def events(
        self,
        request: Request[Any, Any, Any],
        live: NamedDependency[LiveJobs],
        principal: NamedDependency[Principal],
        job_id: str = Parameter(description=_JOB_ID_DOC, schema_extra=_UUID),
    ) -> Stream:
        """`progress` events (the status document) on every change, then `completed`, `failed` or
        `cancelled`, then the end.

        The server pushes each change once to every stream of the job (no polling per stream): in a
        browser, prefer this to polling the status.
        """
        locale = request_locale(request)
        watch = await _watch_job(live, job_id, principal)
        # A plain Stream: the events arrive encoded, shared by every stream of the job.
        return Stream(
            status_events(watch, locale),
            media_type="text/event-stream",
            headers={
                "Cache-Control": "no-store",
                "Content-Language": locale,
                "X-Accel-Buffering": "no",
                "Connection": "keep-alive",
            },
        )

    @post(
        "/status/{job_id:str}/cancel",
        operation_id="CancelExamJob",
        summary="Cancel a submission",
        status_code=200,
        response_description="The status document with `status: cancelled` (also when it already was).",
        responses=auth_responses()
        | problem_responses(
            _404=_NOT_FOUND_JOB,
            _409="The job already completed or failed (`/problems/already-finished`).",
            _503=(
                "The database is unavailable, or a worker kept updating the job meanwhile "
                "(`/problems/service-unavailable`, with `Retry-After`): try again."
            ),
        ),
        operation_class=documented(headers={200: {"Cache-Control": _NO_STORE}, **auth_headers()}),
    )
    async def cancel(
        self,
        request: Request[Any, Any, Any],
        database: NamedDependency[Database],
        broker: NamedDependency[dramatiq.Broker],
        principal: NamedDependency[Principal],
        job_id: str = Parameter(description=_JOB_ID_DOC, schema_extra=_UUID),
    ) -> Response[StatusDocument]:
        """Stop a pending or processing job (a running one stops within 2 s; nothing is retried).

        Answers the status document with `status: "cancelled"`; cancelling a cancelled job again
        answers the same (idempotent).
        """
        locale = request_locale(request)
        if not principal.reads_all:
            await _find_job(database, job_id, principal)  # another caller's job: 404, left alone
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
