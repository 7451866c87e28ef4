"""Liveness (``/health``) and readiness (``/ready``: database and broker reachable)."""

from __future__ import annotations

import asyncio
from typing import Any

import anyio.to_thread
import dramatiq
import msgspec
from litestar import Request, Response, get
from litestar.di import NamedDependency
from sqlalchemy import text

from core.db import Database
from core.errors import ProblemDocument, problem_type
from core.web import problem_response, request_locale
from i18n import gettext

__all__ = ("broker_reachable", "health", "ready")

CHECK_TIMEOUT = 3.0


class HealthStatus(msgspec.Struct):
    """The process answers."""

    status: str


class ReadyStatus(msgspec.Struct):
    """Every dependency answered."""

    status: str
    checks: dict[str, str]


def _ping_broker(broker: dramatiq.Broker) -> None:
    name = type(broker).__name__
    if name == "RedisBroker":
        broker.client.ping()  # type: ignore[attr-defined]
    elif name == "RabbitmqBroker":
        import pika

        params = broker.parameters  # type: ignore[attr-defined]
        conn = pika.BlockingConnection(params[0] if isinstance(params, list) else params)
        conn.close()


async def broker_reachable(broker: dramatiq.Broker) -> bool:
    """Whether the broker answers within a few seconds (always true for the embedded one)."""
    try:
        with anyio.fail_after(CHECK_TIMEOUT):
            await anyio.to_thread.run_sync(_ping_broker, broker, abandon_on_cancel=True)
    except Exception:  # noqa: BLE001  (any failure means not reachable)
        return False
    return True


async def _database_reachable(database: Database) -> bool:
    try:
        async with asyncio.timeout(CHECK_TIMEOUT), database.reader.connect() as conn:
            await conn.execute(text("SELECT 1"))
    except Exception:  # noqa: BLE001
        return False
    return True


@get("/health", operation_id="Health", tags=["operations"], cache=False, summary="Liveness")
async def health() -> HealthStatus:
    """The process is up (no dependency is checked)."""
    return HealthStatus(status="ok")


@get("/ready", operation_id="Ready", tags=["operations"], cache=False, summary="Readiness")
async def ready(
    request: Request[Any, Any, Any], database: NamedDependency[Database], broker: NamedDependency[dramatiq.Broker]
) -> Response[Any]:
    """200 when the database and the broker answer; 503 naming what is down otherwise."""
    db_ok, broker_ok = await asyncio.gather(_database_reachable(database), broker_reachable(broker))
    checks = {"database": "ok" if db_ok else "down", "broker": "ok" if broker_ok else "down"}
    if db_ok and broker_ok:
        return Response(ReadyStatus(status="ready", checks=checks), headers={"Cache-Control": "no-store"})
    locale = request_locale(request)
    down = [gettext(f"ready.{name}", locale) for name, value in checks.items() if value == "down"]
    problem = ProblemDocument(
        type=problem_type("not-ready"),
        title=gettext("problem.not_ready.title", locale),
        status=503,
        detail=gettext("problem.not_ready.detail", locale, down=", ".join(down)),
        instance=request.url.path,
    )
    response = problem_response(problem, locale, {"Retry-After": "5"})
    body = msgspec.json.decode(response.content)
    body["checks"] = checks
    response.content = msgspec.json.encode(body)
    return response
