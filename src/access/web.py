"""Access control of the exam-results API in Litestar: the guard, the ``principal`` dependency,
the student page's credentials and the OpenAPI security scheme.

``server.app.create_app`` builds one :class:`ApiAccess` and puts :meth:`ApiAccess.guard` on the
router of every ``/api/exam-results…`` route. The guard runs before the request's body is read:

1. it identifies the caller (:meth:`ApiAccess.authenticate`): with ``API_AUTH=off`` everyone is
   the anonymous :class:`~access.principal.Principal`; with ``tokens`` an ``Authorization:
   Bearer`` API token or student-page token is required (``401`` otherwise);
2. a route whose ``opt`` names an ``api_scope`` needs that scope (``403``);
3. a route whose ``opt`` has ``rate_limited`` counts against ``SUBMIT_RATE_LIMIT`` (``429``
   with ``Retry-After``, before anything is read or stored).

Handlers take the caller as the dependency ``principal`` (:func:`provide_principal`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

import structlog
from litestar.datastructures import Cookie
from litestar.openapi.spec import OpenAPIType, SecurityRequirement, SecurityScheme

from access.page import (
    PAGE_COOKIE,
    cookie_value,
    is_page_token,
    issue_page_token,
    new_session_id,
    read_cookie,
    read_page_token,
)
from access.principal import SUBMIT, Principal
from access.tokens import authenticate_token
from core.errors import ForbiddenError, RateLimitedError, UnauthorizedError
from core.openapi import Header, problem_responses
from core.signing import new_token

if TYPE_CHECKING:
    from litestar import Request
    from litestar.connection import ASGIConnection
    from litestar.handlers.base import BaseRouteHandler
    from litestar.openapi.datastructures import ResponseSpec

    from access.rate_limit import RateLimiter
    from core.db import Database
    from core.settings import Settings

__all__ = (
    "OPT_RATE_LIMITED",
    "OPT_SCOPE",
    "SECURITY_SCHEME",
    "SUBMIT_OPT",
    "ApiAccess",
    "PageCredentials",
    "auth_headers",
    "auth_responses",
    "provide_principal",
    "security_scheme",
)

#: The name of the bearer scheme in the OpenAPI document.
SECURITY_SCHEME = "ApiToken"
#: ``opt`` keys of a route handler read by the guard.
OPT_SCOPE = "api_scope"
OPT_RATE_LIMITED = "rate_limited"
#: The ``opt`` of the submit route: needs ``submit``, counts against ``SUBMIT_RATE_LIMIT``.
SUBMIT_OPT = {OPT_SCOPE: SUBMIT, OPT_RATE_LIMITED: True}

log = structlog.get_logger("access.web")


@cache
def _process_key() -> str:
    return new_token()


def security_scheme() -> SecurityScheme:
    """The bearer scheme of ``API_AUTH=tokens`` for ``components.securitySchemes``."""
    return SecurityScheme(
        type="http",
        scheme="bearer",
        description=(
            "With `API_AUTH=tokens`, every `/api/exam-results…` request needs `Authorization: Bearer <token>`: "
            "an API token from `exams tokens create NAME [--scope submit] [--scope read_all]` (`submit` by "
            "default). A token without `read_all` sees only the jobs and results it submitted. The exam "
            "catalog (`/api/exams…`) needs none."
        ),
    )


def auth_responses(*, submit: bool = False) -> dict[int, ResponseSpec]:
    """The OpenAPI responses the guard can answer on an exam-results route (``submit``: the
    submit route, which also needs a scope and is rate limited)."""
    described = {
        "_401": (
            "`API_AUTH=tokens`: no `Authorization: Bearer` token, or an unknown, revoked or expired one "
            "(`/problems/unauthorized`, with `WWW-Authenticate: Bearer`)."
        )
    }
    if submit:
        described["_403"] = "`API_AUTH=tokens`: the token lacks the `submit` scope (`/problems/forbidden`)."
        described["_429"] = (
            "Over `SUBMIT_RATE_LIMIT` for this token (with `API_AUTH=off`, or from the student page: for this "
            "client address); nothing was stored (`/problems/rate-limited`, with `Retry-After`)."
        )
    return problem_responses(**described)


def auth_headers(*, submit: bool = False) -> dict[int, dict[str, Header]]:
    """The response headers of :func:`auth_responses`, for ``core.openapi.documented``."""
    headers = {401: {"WWW-Authenticate": Header("`Bearer` (RFC 6750).", required=True)}}
    if submit:
        headers[429] = {
            "Retry-After": Header("Seconds until the limit's period ends.", required=True, type=OpenAPIType.INTEGER)
        }
    return headers


@dataclass(frozen=True)
class PageCredentials:
    """What the student page is rendered with: its bearer token, and the session cookie to set."""

    token: str
    cookie: Cookie


def provide_principal(request: Request[Any, Any, Any]) -> Principal:
    """The caller the guard identified (the ``principal`` dependency)."""
    principal: Principal = request.state.principal
    return principal


def _address(connection: ASGIConnection[Any, Any, Any, Any]) -> str:
    return connection.client.host if connection.client else "unknown"


class ApiAccess:
    """``API_AUTH`` and ``SUBMIT_RATE_LIMIT`` for the web app."""

    def __init__(self, settings: Settings, database: Database, limiter: RateLimiter | None) -> None:
        self.settings = settings
        self.database = database
        self.limiter = limiter

    def __deepcopy__(self, memo: dict[int, Any]) -> ApiAccess:
        # Litestar copies a router (and its guards, bound methods of this) when registering it:
        # the copy must share this one's database and limiter.
        return self

    @property
    def tokens_required(self) -> bool:
        """Whether the exam-results API needs a bearer token (``API_AUTH=tokens``)."""
        return self.settings.api_auth == "tokens"

    @property
    def _secret_key(self) -> str:
        # Without SECRET_KEY, a key of this process: page tokens then end at a restart, and
        # several web processes need a shared SECRET_KEY (production requires one anyway).
        return self.settings.secret_key or _process_key()

    def security(self) -> list[SecurityRequirement] | None:
        """The ``security`` of the exam-results operations (none when ``API_AUTH=off``)."""
        return [{SECURITY_SCHEME: []}] if self.tokens_required else None

    async def authenticate(self, connection: ASGIConnection[Any, Any, Any, Any]) -> Principal:
        """The caller of this request; :class:`UnauthorizedError` without a valid token (``tokens``)."""
        address = _address(connection)
        if not self.tokens_required:
            return Principal.anonymous(address)
        scheme, _, token = connection.headers.get("authorization", "").strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise UnauthorizedError
        if is_page_token(token):
            session_id = read_page_token(self._secret_key, token, time.time())
            if session_id is not None:
                return Principal.page(session_id, address)
        else:
            holder = await authenticate_token(self.database, token)
            if holder is not None:
                return Principal.token(holder.name, holder.scopes, address)
        raise UnauthorizedError("problem.unauthorized.invalid", error="invalid_token")

    async def guard(self, connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler) -> None:
        """Litestar guard of the exam-results routes: who, which scope, how often (see the module)."""
        if connection.scope.get("method") == "OPTIONS":
            return  # CORS preflights carry no credentials
        principal = await self.authenticate(connection)
        connection.state.principal = principal
        if principal.owner is not None:  # the request's log line names the token or page session
            structlog.contextvars.bind_contextvars(caller=principal.owner)
        scope = handler.opt.get(OPT_SCOPE)
        if scope and scope not in principal.scopes:
            raise ForbiddenError(scope=scope)
        if handler.opt.get(OPT_RATE_LIMITED) and self.limiter is not None:
            try:
                decision = await self.limiter.hit(principal.rate_key)
            except Exception as exc:  # noqa: BLE001  (an unreachable counter store never blocks submissions)
                log.warning("submit rate limit not checked", error=f"{type(exc).__name__}: {exc}")
                return
            if not decision.allowed:
                log.info("submission rate limited", retry_after=decision.retry_after)
                raise RateLimitedError(decision.retry_after)

    def page_credentials(self, request: Request[Any, Any, Any]) -> PageCredentials | None:
        """The student page's token and session cookie with ``API_AUTH=tokens``; ``None`` when off.

        The browser session's page-session id is kept (from its cookie) so that a reload
        resumes the job it follows; a missing or forged cookie starts a new session.
        """
        if not self.tokens_required:
            return None
        key = self._secret_key
        session_id = read_cookie(key, request.cookies.get(PAGE_COOKIE)) or new_session_id()
        cookie = Cookie(
            key=PAGE_COOKIE,
            value=cookie_value(key, session_id),
            path="/",
            httponly=True,
            samesite="lax",
            secure=request.url.scheme == "https",
        )
        return PageCredentials(token=issue_page_token(key, session_id, time.time()), cookie=cookie)

    async def aclose(self) -> None:
        """Close the rate limiter's connections."""
        if self.limiter is not None:
            await self.limiter.aclose()
