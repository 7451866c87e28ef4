"""Liveness (``/health``) and readiness (``/ready``: database and broker reachable)."""

from __future__ import annotations

import asyncio
from typing import Any, Literal

import anyio.to_thread
import dramatiq
import msgspec
from litestar import Request, Response, get
from litestar.di import NamedDependency
from litestar.openapi.datastructures import ResponseSpec
from sqlalchemy import text

from core.db import Database
from core.errors import ProblemDocument, problem_type
from core.openapi import Header, documented
from core.web import PROBLEM_MEDIA_TYPE, problem_response, request_locale
from i18n import gettext

__all__ = ("broker_reachable", "health", "ready")

CHECK_TIMEOUT = 3.0


Check = Literal["ok", "down"]


class HealthStatus(msgspec.Struct):
    """The process answers."""

    status: Literal["ok"]


class ReadyChecks(msgspec.Struct):
    """Each dependency: ``ok``, or ``down`` when it did not answer within a few seconds."""

    database: Check
    broker: Check


class ReadyStatus(msgspec.Struct):
    """Every dependency answered."""

    status: Literal["ready"]
    checks: ReadyChecks


class NotReadyProblem(ProblemDocument, frozen=True, kw_only=True):
    """The problem document of ``/ready`` (``/problems/not-ready``), with each dependency's state."""

    checks: ReadyChecks


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


@get(
    "/health",
    operation_id="Health",
    tags=["operations"],
    cache=False,
    summary="Liveness",
    response_description="The process is up.",
)
async def health() -> HealthStatus:
    """The process is up (no dependency is checked)."""
    return HealthStatus(status="ok")


@get(
    "/ready",
    operation_id="Ready",
    tags=["operations"],
    cache=False,
    summary="Readiness",
    responses={
        200: ResponseSpec(
            data_container=ReadyStatus, description="The database and the broker answered.", generate_examples=False
        ),
        503: ResponseSpec(
            data_container=NotReadyProblem,
            description="The database or the broker is down (`/problems/not-ready`, naming what is down).",
            media_type=PROBLEM_MEDIA_TYPE,
            generate_examples=False,
        ),
    },
    operation_class=documented(headers={200: {"Cache-Control": Header("Always `no-store`.", required=True)}}),
)
async def ready(
    request: Request[Any, Any, Any], database: NamedDependency[Database], broker: NamedDependency[dramatiq.Broker]
) -> Response[Any]:
    """200 when the database and the broker answer; 503 naming what is down otherwise."""
    db_ok, broker_ok = await asyncio.gather(_database_reachable(database), broker_reachable(broker))
    checks = ReadyChecks(database="ok" if db_ok else "down", broker="ok" if broker_ok else "down")
    if db_ok and broker_ok:
        return Response(ReadyStatus(status="ready", checks=checks), headers={"Cache-Control": "no-store"})
    locale = request_locale(request)
    down = [gettext(f"ready.{name}", locale) for name, ok in (("database", db_ok), ("broker", broker_ok)) if not ok]
    problem = NotReadyProblem(
        type=problem_type("not-ready"),
        title=gettext("problem.not_ready.title", locale),
        status=503,
        detail=gettext("problem.not_ready.detail", locale, down=", ".join(down)),
        instance=request.url.path,
        checks=checks,
    )
    return problem_response(problem, locale, {"Retry-After": "5"})
