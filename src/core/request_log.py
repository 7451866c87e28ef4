"""ASGI middleware: a request id on every request (``X-Request-ID``) and one log line per request."""

from __future__ import annotations

import re
import time
import uuid

import structlog
from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ("RequestLogMiddleware",)

log = structlog.get_logger("core.http")
_VALID_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_QUIET_PATHS = ("/health", "/metrics", "/static/")
_POLL_PATH = "/api/exam-results/status/"


class RequestLogMiddleware:
    """Binds ``request_id`` to the log context, echoes it back, and logs the request's outcome."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await self.app(scope, receive, send)
            return
        incoming = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        request_id = incoming if _VALID_ID.match(incoming) else uuid.uuid4().hex
        status = 500
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
            await send(message)

        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=request_id)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            path = scope.get("path", "")
            if status >= 400 or not path.startswith(_QUIET_PATHS):
                # A student polls every 2 s: successful polls are debug lines, not one info line
                # per student every 2 s.
                polling = status < 400 and scope.get("method") == "GET" and path.startswith(_POLL_PATH)
                (log.debug if polling else log.info)(
                    "http request",
                    method=scope.get("method"),
                    path=path,
                    status=status,
                    duration_ms=round((time.perf_counter() - started) * 1000, 2),
                )
            structlog.contextvars.clear_contextvars()
