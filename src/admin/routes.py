"""The dashboard as one Litestar router under ``/admin`` (registered by ``server.app``)."""

from __future__ import annotations

from litestar import Router
from litestar.datastructures import ResponseHeader

from admin.controllers import AdminController, LoginController
from admin.live import AdminLiveController
from admin.web import (
    CONTENT_SECURITY_POLICY,
    Forbidden,
    LoginRequired,
    auth_guard,
    forbidden_handler,
    login_required_handler,
)

__all__ = ("admin_router",)


def admin_router() -> Router:
    """Every dashboard route, behind the login guard, with the dashboard's security headers.

    The app must hold an :class:`admin.web.AdminServices` in ``app.state.admin_services``.
    """
    return Router(
        path="/",
        route_handlers=[LoginController, AdminController, AdminLiveController],
        guards=[auth_guard],
        exception_handlers={LoginRequired: login_required_handler, Forbidden: forbidden_handler},
        response_headers=[
            ResponseHeader(name="Content-Security-Policy", value=CONTENT_SECURITY_POLICY),
            ResponseHeader(name="X-Frame-Options", value="DENY"),
            ResponseHeader(name="X-Content-Type-Options", value="nosniff"),
            ResponseHeader(name="Referrer-Policy", value="same-origin"),
        ],
        include_in_schema=False,
    )
