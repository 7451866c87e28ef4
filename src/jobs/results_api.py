"""HTTP API of results that outlast the job: one result, a keyset-paged list or CSV, an exam's summary.

Query parameters are read as text and checked here, so every bad one is reported at once as a
localized ``422`` (``/problems/invalid-query``) rather than Litestar's own ``400``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any
from uuid import UUID

from litestar import Controller, Request, Response, get
from litestar.di import NamedDependency
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import OpenAPIFormat, OpenAPIType
from litestar.params import Parameter, QueryParameter
from litestar.response import Stream
from sqlalchemy import select

from access.principal import Principal
from access.web import auth_headers, auth_responses
from core.db import Database
from core.errors import InvalidQueryError, NotFoundError
from core.openapi import Header, documented, problem_responses, text_schema
from core.web import request_locale
from exams.models import Exam
from jobs.results import (
    MAX_LIMIT,
    ExamResultsSummary,
    InvalidCursorError,
    ResultDocument,
    ResultFilters,
    ResultPage,
    csv_lines,
    exam_summary,
    get_result,
    list_results,
)
from jobs.schemas import MAX_CODE_LENGTH, MAX_ID_LENGTH

__all__ = ("ExamResultsReadController", "exam_results_summary")

DEFAULT_LIMIT = 50
_BOOLEANS = {"true": True, "false": False}
_NO_STORE = {"Cache-Control": "no-store"}
_UNAVAILABLE = "The database is unavailable (`/problems/service-unavailable`, with `Retry-After`)."

Problem = tuple[str, str, dict[str, Any]]


def _text(name: str, value: str | None, max_length: int, problems: list[Problem]) -> str | None:
    if value is None or value == "":
        return None
    if len(value) > max_length:
        problems.append((name, "validation.too_long", {"max": max_length}))
        return None
    if not value.isprintable():
        problems.append((name, "validation.invalid_characters", {}))
        return None
    return value


def _when(name: str, value: str | None, problems: list[Problem]) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.strip())
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        parsed.astimezone(UTC)  # 0001-01-01T00:00+14:00 has no UTC time: the database could not compare it
    except (ValueError, OverflowError):
        problems.append((name, "validation.datetime", {}))
        return None
    return parsed


def _filters(request: Request[Any, Any, Any], principal: Principal, problems: list[Problem]) -> ResultFilters:
    query = request.query_params
    passed_raw = query.get("passed")
    passed = None
    if passed_raw:
        passed = _BOOLEANS.get(passed_raw.strip().lower())
        if passed is None:
            problems.append(("passed", "validation.boolean", {}))
    after = _when("graded_after", query.get("graded_after"), problems)
    before = _when("graded_before", query.get("graded_before"), problems)
    if after is not None and before is not None and before <= after:
        problems.append(("graded_before", "validation.datetime_order", {}))
    return ResultFilters(
        student_id=_text("student_id", query.get("student_id"), MAX_ID_LENGTH, problems),
        exam_code=_text("exam_code", query.get("exam_code"), MAX_CODE_LENGTH, problems),
        passed=passed,
        graded_after=after,
        graded_before=before,
        owner=principal.only_owner,
    )


def _limit(raw: str | None, problems: list[Problem]) -> int:
    if raw is None or raw == "":
        return DEFAULT_LIMIT
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_LIMIT:
        problems.append(("limit", "validation.limit_range", {"max": MAX_LIMIT}))
        return DEFAULT_LIMIT
    return value


_FILTER_DOCS = {
    "student_id": "Only this student's results.",
    "exam_code": "Only this exam's results.",
    "passed": "`true` or `false`: only passed or only failed results.",
    "graded_after": "Only results graded after this time (ISO 8601; UTC when no offset is given).",
    "graded_before": "Only results graded before this time (ISO 8601; UTC when no offset is given).",
}


_QUERY_DOCS = {
    **_FILTER_DOCS,
    "limit": f"Results per page, 1 to {MAX_LIMIT} (default {DEFAULT_LIMIT}).",
    "cursor": "`next_cursor` of the previous page (opaque).",
    "format": (
        "`json` (default) or `csv`: every matching result as a streamed CSV download (UTF-8 with BOM; "
        "`limit` does not apply)."
    ),
}


#: What each query parameter's schema says beyond "text" (the handler reads them as text).
_QUERY_SCHEMAS: dict[str, dict[str, Any]] = {
    "student_id": {"max_length": MAX_ID_LENGTH},
    "exam_code": {"max_length": MAX_CODE_LENGTH},
    "passed": {"enum": ["true", "false"]},
    "limit": {"type": OpenAPIType.INTEGER, "minimum": 1, "maximum": MAX_LIMIT},
    "format": {"enum": ["json", "csv"]},
}


def _query(name: str) -> Any:
    """The documentation of one query parameter (read as text, checked by the handler).

    Its schema is a string (not "string or null": a query parameter is absent, never null),
    or what :data:`_QUERY_SCHEMAS` says."""
    schema = {"one_of": None, "type": OpenAPIType.STRING, **_QUERY_SCHEMAS.get(name, {})}
    return QueryParameter(name=name, description=_QUERY_DOCS[name], required=False, schema_extra=schema)


class ExamResultsReadController(Controller):
    """Results kept after their jobs are cleaned up (``exam_results``)."""

    path = "/api/exam-results"
    tags = ["exam-results"]  # noqa: RUF012

    @get(
        "/",
        operation_id="ListExamResults",
        summary="List results (JSON pages or CSV)",
        cache=False,
        responses={
            200: ResponseSpec(
                data_container=ResultPage,
                description="One page of results (with `format=csv`: every matching result as CSV).",
                generate_examples=False,
            ),
            **auth_responses(),
            **problem_responses(
                _422="A query parameter is invalid (`/problems/invalid-query`, one `errors` entry per parameter).",
                _503=_UNAVAILABLE,
            ),
        },
        operation_class=documented(
            headers={200: {"Cache-Control": Header("Always `no-store`.", required=True)}, **auth_headers()},
            empty_query=list(_QUERY_DOCS),
            content={
                200: {
                    "text/csv": text_schema(
                        "UTF-8 with BOM; the header row "
                        "`job_id,exam_code,student_id,score,max_score,percentage,passed,graded_at`, "
                        "then one row per result, newest first."
                    )
                }
            },
        ),
    )
    async def list_results(  # noqa: PLR0917  (documented query parameters)
        self,
        request: Request[Any, Any, Any],
        database: NamedDependency[Database],
        principal: NamedDependency[Principal],
        student_id: Annotated[str | None, _query("student_id")] = None,
        exam_code: Annotated[str | None, _query("exam_code")] = None,
        passed: Annotated[str | None, _query("passed")] = None,
        graded_after: Annotated[str | None, _query("graded_after")] = None,
        graded_before: Annotated[str | None, _query("graded_before")] = None,
        limit: Annotated[str | None, _query("limit")] = None,
        cursor: Annotated[str | None, _query("cursor")] = None,
        format: Annotated[str | None, _query("format")] = None,
    ) -> Response[ResultPage] | Stream:
        """Results newest first, filtered; keyset-paged with `next_cursor` (`null` on the last page).
        A token without `read_all` lists only the results of what it submitted.

        With `format=csv`: `text/csv` with the header
        `job_id,exam_code,student_id,score,max_score,percentage,passed,graded_at`, one row per result.
        """
        problems: list[Problem] = []
        filters = _filters(request, principal, problems)
        as_csv = (format or "json").strip().lower()
        if as_csv not in ("json", "csv"):
            problems.append(("format", "validation.format", {}))
        size = _limit(limit, problems) if as_csv != "csv" else DEFAULT_LIMIT
        if problems:
            raise InvalidQueryError(problems)
        try:
            if as_csv == "csv":
                # Checks the cursor now: the first chunk of a stream can no longer be a 422.
                stream = csv_lines(database.reader, filters, cursor=cursor or None)
                first = await anext(stream)
                return Stream(
                    _chain(first, stream),
                    media_type="text/csv; charset=utf-8",
                    headers={**_NO_STORE, "Content-Disposition": 'attachment; filename="exam-results.csv"'},
                )
            async with database.reader.connect() as connection:
                page = await list_results(connection, filters, limit=size, cursor=cursor or None)
        except InvalidCursorError:
            raise InvalidQueryError([("cursor", "validation.cursor", {})]) from None
        return Response(page, headers={**_NO_STORE, "Content-Language": request_locale(request)})

    @get(
        "/{job_id:str}",
        operation_id="GetExamResult",
        summary="One result (also after its job was cleaned up)",
        cache=False,
        response_description="The result of a completed job.",
        responses=auth_responses()
        | problem_responses(
            _404=(
                "No such job, the id is not a UUID, the job has not completed, or it is another token's "
                "(a token without `read_all`) (`/problems/not-found`)."
            ),
            _503=_UNAVAILABLE,
        ),
        operation_class=documented(
            headers={200: {"Cache-Control": Header("Always `no-store`.", required=True)}, **auth_headers()}
        ),
    )
    async def get_result(
        self,
        database: NamedDependency[Database],
        principal: NamedDependency[Principal],
        job_id: str = Parameter(
            description="The `job_id` returned at submission (a UUID; anything else is a `404`).",
            schema_extra={"format": OpenAPIFormat.UUID},
        ),
    ) -> Response[ResultDocument]:
        """The grade of a completed job: `job_id`, `exam_code`, `student_id`, `graded_at` and `result`."""
        try:
            uid = UUID(job_id)
        except ValueError:
            uid = None
        document = None
        if uid is not None:
            async with database.reader.connect() as connection:
                document = await get_result(connection, uid, owner=principal.only_owner)
        if document is None:
            raise NotFoundError("problem.not_found.result", job_id=job_id[:64])
        return Response(document, headers=_NO_STORE)


async def _chain(first: bytes, rest: Any) -> Any:
    yield first
    async for chunk in rest:
        yield chunk


@get(
    "/api/exams/{code:str}/summary",
    operation_id="GetExamSummary",
    summary="An exam's results at a glance",
    tags=["exams"],
    cache=False,
    response_description="Figures over every kept result of the exam (null means: no results yet).",
    responses=problem_responses(
        _404="No exam with this code, and no results of one (`/problems/not-found`).", _503=_UNAVAILABLE
    ),
    operation_class=documented(headers={200: {"Cache-Control": Header("Always `no-store`.", required=True)}}),
)
async def exam_results_summary(
    database: NamedDependency[Database],
    code: str = Parameter(description="Exam code, e.g. MATH-101."),
) -> Response[ExamResultsSummary]:
    """How many results, their mean percentage, the pass rate (0 to 1) and each topic's mean
    percentage, computed by the database over every kept result of the exam."""
    summary = None
    if code.isprintable() and len(code) <= MAX_CODE_LENGTH:
        async with database.reader.connect() as connection:
            summary = await exam_summary(connection, code)
            if summary.results == 0 and (await connection.scalar(select(Exam.code).where(Exam.code == code))) is None:
                summary = None
    if summary is None:
        raise NotFoundError("problem.not_found.exam", code=code[:64])
    return Response(summary, headers=_NO_STORE)
