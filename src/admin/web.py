"""The dashboard's request plumbing: what it is built from, the login guard (session cookie,
CSRF, role), the page language, and the responses for anonymous or forbidden requests.

Anonymous requests to any ``/admin…`` path are redirected to the login page, or answered 401
for htmx requests (``HX-Request``); every POST needs the session's CSRF token (form field
``_csrf`` or header ``X-CSRF-Token``, which htmx sends from ``hx-headers``); a handler with
``opt={"role": "operator"}`` refuses viewers with 403.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from functools import cache
from typing import Any, cast
from urllib.parse import quote, urlsplit

import dramatiq
from litestar import Request, Response
from litestar.connection import ASGIConnection
from litestar.exceptions import HTTPException
from litestar.handlers.base import BaseRouteHandler
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.response import Redirect, Template

from admin.auth import Identity, load_session
from admin.formatting import Formatter
from admin.operations import Operations
from admin.overview import MetricReader
from admin.security import secrets_equal, unsign
from core.db import Database
from core.settings import Settings
from i18n import SUPPORTED_LOCALES, Locale, direction, gettext, negotiate
from jobs.documents import error_message
from jobs.live import LiveJobs
from jobs.models import ExamProcessingJob
from jobs.monitoring import MonitoringCache

__all__ = (
    "CONTENT_SECURITY_POLICY",
    "LANG_COOKIE",
    "LOGIN_COOKIE",
    "SESSION_COOKIE",
    "AdminServices",
    "Forbidden",
    "LoginRequired",
    "admin_locale",
    "auth_guard",
    "cookie_key",
    "forbidden_handler",
    "identity_of",
    "is_htmx",
    "login_required_handler",
    "page",
    "page_context",
    "render",
)

SESSION_COOKIE = "exams_admin_session"
LOGIN_COOKIE = "exams_admin_login"
LANG_COOKIE = "exams_admin_lang"
#: Only the product's own scripts, styles and images; no inline script or style, no framing.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)


@dataclass
class AdminServices:
    """What the dashboard is built from (handed over by the composition root)."""

    settings: Settings
    database: Database
    broker: dramatiq.Broker
    monitoring: MonitoringCache
    metrics: MetricReader
    operations: Operations
    #: Job changes as they happen (the live list and job page's server-sent events).
    live: LiveJobs


class LoginRequired(HTTPException):
    """Raised when a request to the dashboard has no live session."""

    status_code = 401


class Forbidden(HTTPException):
    """Raised when the CSRF token is missing or wrong, or a viewer asks for an operator's action."""

    status_code = 403


@cache
def _process_key() -> str:
    return secrets.token_urlsafe(32)


def cookie_key(settings: Settings) -> str:
    """``SECRET_KEY``, or a random key of this process when unset (sessions then end at restart)."""
    return settings.secret_key or _process_key()


def is_htmx(connection: ASGIConnection[Any, Any, Any, Any]) -> bool:
    """Whether htmx sent the request (it expects a fragment, or a 401 rather than a redirect)."""
    return connection.headers.get("hx-request") == "true"


def admin_locale(connection: ASGIConnection[Any, Any, Any, Any]) -> Locale:
    """``?lang=``, then the language chosen earlier (cookie), then ``Accept-Language``."""
    chosen = connection.query_params.get("lang") or connection.cookies.get(LANG_COOKIE)
    return negotiate(chosen, connection.headers.get("accept-language"))


def identity_of(request: Request[Any, Any, Any]) -> Identity:
    """The signed-in user of a request that passed :func:`auth_guard`."""
    return cast("Identity", request.state.admin_identity)


async def auth_guard(connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler) -> None:
    """Let through a live session (and, for a POST, its CSRF token; for operator handlers, an operator)."""
    if handler.opt.get("public"):
        return
    services: AdminServices = connection.app.state.admin_services
    token = unsign(connection.cookies.get(SESSION_COOKIE), cookie_key(services.settings))
    identity = None
    if token is not None:
        async with services.database.transaction() as session:
            identity = await load_session(session, token)
    if identity is None:
        raise LoginRequired(detail="login required")
    connection.state.admin_identity = identity
    connection.state.admin_token = token
    if connection.scope.get("method", "GET") not in ("GET", "HEAD", "OPTIONS"):
        sent = connection.headers.get("x-csrf-token")
        if sent is None:
            request = cast("Request[Any, Any, Any]", connection)
            form = await request.form()
            value = form.get("_csrf")
            sent = value if isinstance(value, str) else None
        if not sent or not secrets_equal(sent, identity.csrf_token):
            raise Forbidden(detail="csrf")
    if handler.opt.get("role") == "operator" and not identity.is_operator:
        raise Forbidden(detail="role")


def page_context(request: Request[Any, Any, Any], **context: Any) -> dict[str, Any]:
    """What every dashboard template gets (language, user, CSRF token, helpers), plus ``context``."""
    locale = admin_locale(request)
    services: AdminServices = request.app.state.admin_services
    identity: Identity | None = getattr(request.state, "admin_identity", None)

    def t(key: str, **params: Any) -> str:
        return gettext(key, locale, **params)

    def tx(key: str, default: str) -> str:
        text = gettext(key, locale)
        return default if text == key else text

    def job_error(job: ExamProcessingJob) -> str:
        """The job's error in the page's language (rendered from its ``error_code``)."""
        return error_message(job, locale) or ""

    return {
        "locale": locale,
        "dir": direction(locale),
        "t": t,
        "tx": tx,
        "job_error": job_error,
        "url_host": _url_host,
        "fmt": Formatter(locale),
        "locales": [(code, gettext(f"admin.lang.{code}", code)) for code in SUPPORTED_LOCALES],
        "identity": identity,
        "csrf": identity.csrf_token if identity is not None else "",
        "settings": services.settings,
        "path": request.url.path,
        **context,
    }


def page(request: Request[Any, Any, Any], template: str, *, status_code: int = 200, **context: Any) -> Template:
    """Render a dashboard template with what every page needs (language, user, CSRF token)."""
    locale = admin_locale(request)
    response = Template(
        template_name=template,
        status_code=status_code,
        context=page_context(request, **context),
        headers={"Content-Language": locale, "Cache-Control": "no-store", "Vary": "Cookie, Accept-Language"},
    )
    if request.query_params.get("lang") in SUPPORTED_LOCALES:
        response.set_cookie(LANG_COOKIE, locale, path="/admin", max_age=365 * 86400, httponly=True, samesite="lax")
    return response


def render(request: Request[Any, Any, Any], template: str, **context: Any) -> str:
    """A dashboard template rendered to text, with :func:`page`'s context (a server-sent fragment)."""
    engine = cast("JinjaTemplateEngine", request.app.template_engine)
    return engine.get_template(template).render(**page_context(request, **context))


def _url_host(url: str) -> str:
    """The host (and port) of a callback URL: what an operator recognises, without its path."""
    try:
        return urlsplit(url).netloc.rpartition("@")[2] or url
    except ValueError:
        return url


def login_required_handler(request: Request[Any, Any, Any], _exc: LoginRequired) -> Response[Any]:
    """htmx: 401 (its script goes to the login page); otherwise a redirect to the login page."""
    if is_htmx(request):
        return Response(
            content="",
            status_code=401,
            headers={"HX-Redirect": "/admin/login", "Cache-Control": "no-store"},
        )
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return Redirect(f"/admin/login?next={quote(target, safe='')}", status_code=303)


def forbidden_handler(request: Request[Any, Any, Any], exc: Forbidden) -> Response[Any]:
    """A 403 page (or fragment) saying why, in the page's language."""
    reason = "admin.forbidden.csrf" if exc.detail == "csrf" else "admin.forbidden.role"
    template = "admin/partials/notice.html" if is_htmx(request) else "admin/error.html"
    return page(request, template, status_code=403, kind="error", message_key=reason)
