"""The product's exception tree and its rendering as RFC 9457 problem documents.

    AppError                      server-side, 500 unless a subclass says otherwise
    ├── ClientError               the request is at fault (4xx)
    │   ├── NotFoundError         404
    │   ├── MalformedRequestError 400
    │   ├── ValidationFailedError 422, with ``errors``
    │   ├── InvalidQueryError     422, with ``errors`` (query parameters)
    │   ├── IdempotencyConflictError 422
    │   ├── AlreadyFinishedError  409 (cancelling a finished job)
    │   ├── PayloadTooLargeError  413
    │   ├── UnauthorizedError     401 (no valid API token; ``WWW-Authenticate: Bearer``)
    │   ├── ForbiddenError        403 (the token lacks a scope)
    │   └── RateLimitedError      429 (with ``Retry-After``)
    └── ServiceUnavailableError   503 (database or broker down)

Titles and details are i18n keys, rendered in the request's locale; ``type`` never changes
with the language.
"""

from __future__ import annotations

from typing import Any, ClassVar

import msgspec

from i18n import gettext

__all__ = (
    "AlreadyFinishedError",
    "AppError",
    "ClientError",
    "ForbiddenError",
    "IdempotencyConflictError",
    "InvalidQueryError",
    "MalformedRequestError",
    "NotFoundError",
    "PayloadTooLargeError",
    "ProblemDocument",
    "RateLimitedError",
    "ServiceUnavailableError",
    "UnauthorizedError",
    "ValidationFailedError",
    "problem_type",
)

PROBLEM_BASE = "/problems/"


def problem_type(slug: str) -> str:
    """Return the stable ``type`` URI of a problem."""
    return f"{PROBLEM_BASE}{slug}"


class ProblemError(msgspec.Struct, frozen=True):
    """One field's validation problem."""

    field: str
    message: str


class ProblemDocument(msgspec.Struct, frozen=True, omit_defaults=True):
    """An RFC 9457 problem document."""

    type: str
    title: str
    status: int
    detail: str
    instance: str | None = None
    errors: list[ProblemError] | None = None


class AppError(Exception):
    """Raised when the product cannot do what was asked; the root of its errors."""

    status_code: ClassVar[int] = 500
    slug: ClassVar[str] = "internal-error"
    title_key: ClassVar[str] = "problem.internal_error.title"
    detail_key: ClassVar[str] = "problem.internal_error.detail"

    def __init__(self, detail_key: str | None = None, /, **params: Any) -> None:
        self.detail_key_override = detail_key
        self.params = params
        super().__init__(gettext(detail_key or self.detail_key, "en", **params))

    def to_problem(self, locale: str, instance: str | None = None) -> ProblemDocument:
        """Render this error as a problem document in ``locale``."""
        return ProblemDocument(
            type=problem_type(self.slug),
            title=gettext(self.title_key, locale),
            status=self.status_code,
            detail=gettext(self.detail_key_override or self.detail_key, locale, **self.params),
            instance=instance,
        )

    def headers(self) -> dict[str, str]:
        """Response headers this error's problem document goes with (none by default)."""
        return {}


class ClientError(AppError):
    """Raised when the request itself is at fault."""

    status_code = 400
    slug = "bad-request"
    title_key = "problem.bad_request.title"
    detail_key = "problem.bad_request.detail"


class NotFoundError(ClientError):
    """Raised when the addressed job or exam does not exist."""

    status_code = 404
    slug = "not-found"
    title_key = "problem.not_found.title"
    detail_key = "problem.not_found.detail"


class MalformedRequestError(ClientError):
    """Raised when the body is not valid JSON."""

    status_code = 400
    slug = "malformed-json"
    title_key = "problem.malformed_json.title"
    detail_key = "problem.malformed_json.detail"


class ValidationFailedError(ClientError):
    """Raised when a well-formed request breaks the submission's rules."""

    status_code = 422
    slug = "validation-error"
    title_key = "problem.validation.title"
    detail_key = "problem.validation.detail"

    def __init__(self, errors: list[tuple[str, str, dict[str, Any]]]) -> None:
        #: (field, i18n key, params) of each problem.
        self.errors = errors
        super().__init__(count=len(errors))

    def to_problem(self, locale: str, instance: str | None = None) -> ProblemDocument:
        """Render with one ``errors`` entry per field problem."""
        base = super().to_problem(locale, instance)
        items = [ProblemError(field, gettext(key, locale, **params)) for field, key, params in self.errors]
        return msgspec.structs.replace(base, errors=items)


class InvalidQueryError(ValidationFailedError):
    """Raised when query parameters break their rules (one ``errors`` entry per parameter)."""

    slug = "invalid-query"
    title_key = "problem.invalid_query.title"
    detail_key = "problem.invalid_query.detail"


class AlreadyFinishedError(ClientError):
    """Raised when a job that already completed or failed is asked to change (a cancel)."""

    status_code = 409
    slug = "already-finished"
    title_key = "problem.already_finished.title"
    detail_key = "problem.already_finished.detail"


class IdempotencyConflictError(ClientError):
    """Raised when an ``Idempotency-Key`` is reused with a different body."""

    status_code = 422
    slug = "idempotency-key-reused"
    title_key = "problem.idempotency.title"
    detail_key = "problem.idempotency.detail"


class PayloadTooLargeError(ClientError):
    """Raised when the body is over the size limit."""

    status_code = 413
    slug = "payload-too-large"
    title_key = "problem.too_large.title"
    detail_key = "problem.too_large.detail"


class ServiceUnavailableError(AppError):
    """Raised when the database (or another dependency) cannot be reached."""

    status_code = 503
    slug = "service-unavailable"
    title_key = "problem.unavailable.title"
    detail_key = "problem.unavailable.detail"


class UnauthorizedError(ClientError):
    """Raised when an API request carries no valid bearer token (``API_AUTH=tokens``).

    ``error``: RFC 6750's code for a token that was sent but is unusable (``invalid_token``);
    ``None`` when no token was sent at all.
    """

    status_code = 401
    slug = "unauthorized"
    title_key = "problem.unauthorized.title"
    detail_key = "problem.unauthorized.detail"

    def __init__(self, detail_key: str | None = None, /, *, error: str | None = None, **params: Any) -> None:
        self.error = error
        super().__init__(detail_key, **params)

    def headers(self) -> dict[str, str]:
        """``WWW-Authenticate: Bearer`` (RFC 6750), with the error code when a token was sent."""
        return {"WWW-Authenticate": f'Bearer error="{self.error}"' if self.error else "Bearer"}


class ForbiddenError(ClientError):
    """Raised when a valid API token lacks the scope an endpoint needs (``scope``)."""

    status_code = 403
    slug = "forbidden"
    title_key = "problem.forbidden.title"
    detail_key = "problem.forbidden.detail"

    def headers(self) -> dict[str, str]:
        """RFC 6750's ``insufficient_scope``, naming the scope needed."""
        return {"WWW-Authenticate": f'Bearer error="insufficient_scope", scope="{self.params.get("scope", "")}"'}


class RateLimitedError(ClientError):
    """Raised when a client is over its request rate; ``retry_after`` seconds until it may send again."""

    status_code = 429
    slug = "rate-limited"
    title_key = "problem.rate_limited.title"
    detail_key = "problem.rate_limited.detail"

    def __init__(self, retry_after: int) -> None:
        self.retry_after = max(1, retry_after)
        super().__init__(count=self.retry_after)

    def headers(self) -> dict[str, str]:
        """``Retry-After`` in whole seconds."""
        return {"Retry-After": str(self.retry_after)}
