"""Request-level helpers shared by controllers: the request's locale and problem responses."""

from __future__ import annotations

from typing import Any

import msgspec
import structlog
from litestar import Request, Response
from litestar.exceptions import HTTPException, NotFoundException
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from core.errors import (
    AppError,
    ClientError,
    NotFoundError,
    PayloadTooLargeError,
    ProblemDocument,
    ServiceUnavailableError,
    problem_type,
)
from core.retry import is_connection_problem
from i18n import Locale, gettext, negotiate

__all__ = ("PROBLEM_MEDIA_TYPE", "exception_handlers", "problem_response", "request_locale")

PROBLEM_MEDIA_TYPE = "application/problem+json"
log = structlog.get_logger("core.web")


def request_locale(request: Request[Any, Any, Any]) -> Locale:
    """The locale a request asks for (``?lang=``, then ``Accept-Language``, then English)."""
    cached = request.scope.get("state", {}).get("locale")
    if cached:
        return cached  # type: ignore[no-any-return]
    locale = negotiate(request.query_params.get("lang"), request.headers.get("accept-language"))
    request.scope.setdefault("state", {})["locale"] = locale
    return locale


def problem_response(problem: ProblemDocument, locale: str, headers: dict[str, str] | None = None) -> Response[bytes]:
    """Serialise a problem document with the right media type and ``Content-Language``."""
    return Response(
        content=msgspec.json.encode(problem),
        status_code=problem.status,
        media_type=PROBLEM_MEDIA_TYPE,
        headers={"Content-Language": locale, "Cache-Control": "no-store", **(headers or {})},
    )


def _app_error(request: Request[Any, Any, Any], exc: AppError) -> Response[bytes]:
    locale = request_locale(request)
    headers = {"Retry-After": "5"} if exc.status_code == 503 else {}
    headers.update(exc.headers())
    return problem_response(exc.to_problem(locale, instance=request.url.path), locale, headers)


def _http_error(request: Request[Any, Any, Any], exc: HTTPException) -> Response[bytes]:
    mapped: AppError
    if exc.status_code == 413:
        mapped = PayloadTooLargeError(max_bytes=request.route_handler.resolve_request_max_body_size())
    elif isinstance(exc, NotFoundException) or exc.status_code == 404:
        mapped = NotFoundError()
    elif exc.status_code == 400:
        mapped = ClientError()
    else:
        locale = request_locale(request)
        slug = {
            405: "method-not-allowed",
            401: "unauthorized",
            403: "forbidden",
            429: "too-many-requests",
        }.get(exc.status_code, "http-error")
        problem = ProblemDocument(
            type=problem_type(slug),
            title=gettext(f"problem.http_{exc.status_code}.title", locale),
            status=exc.status_code,
            detail=gettext("problem.http_error.detail", locale, status=exc.status_code),
            instance=request.url.path,
        )
        return problem_response(problem, locale, dict(exc.headers or {}))
    return _app_error(request, mapped)


def _database_error(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    summary = f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:200]}"
    if not is_connection_problem(exc):
        # The database answered and refused the statement: our bug, not an outage.
        log.error("database refused a statement", error=summary, path=request.url.path)
        return _app_error(request, AppError())
    log.error("database unavailable", error=summary)
    return _app_error(request, ServiceUnavailableError("problem.unavailable.database"))


def _unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    # Not wrapped by SQLAlchemy: a refused connection, or asyncpg's own errors while connecting
    # ("the database system is shutting down", "… is starting up").
    if is_connection_problem(exc):
        return _database_error(request, exc)
    log.exception("unhandled error", path=request.url.path)
    return _app_error(request, AppError())


exception_handlers: dict[type[Exception] | int, Any] = {
    AppError: _app_error,
    ClientError: _app_error,
    HTTPException: _http_error,
    DBAPIError: _database_error,
    PoolTimeoutError: _database_error,
    Exception: _unexpected,
}
