"""The dashboard's live parts as server-sent events (htmx's SSE extension), fed by :mod:`jobs.live`.

- ``/admin/jobs/events?<filters>``: the jobs list's rows (event ``rows``). Viewers of the same
  page and filter share one query, re-run at most once a second after a job changes (and every
  15 s anyway, for the stalled marks). Nothing is queried while no job changes.
- ``/admin/jobs/{job_id}/events``: the job page's live part (event ``job``), rendered from the
  row every stream of that job shares (one read per change per process), then ``done`` when the
  job is finished (the page's ``sse-close``).

Both sit behind the dashboard's login guard. They are rendered per viewer (language, role, CSRF
token). They end after :data:`STREAM_SECONDS`, and the browser reconnects through the guard, so a
stream never outlives its session by long. A comment goes out every 15 s of silence, so that
proxies keep the connection.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any, Final
from uuid import UUID

from litestar import Controller, Request, get
from litestar.exceptions import NotFoundException
from litestar.params import FromPath
from litestar.response import ServerSentEvent, ServerSentEventMessage, Template
from litestar.types import SSEData

from admin.controllers import PAGE_SIZE, _stalled, _step_states
from admin.filters import ParsedFilter, parse_filter
from admin.web import AdminServices, admin_locale, page, render
from jobs.admin_queries import Cursor, JobPage, list_jobs
from jobs.live import KEEPALIVE_SECONDS, RETRY_MILLISECONDS, JobWatch, QueryWatch
from jobs.progress import FINAL_STATUSES

__all__ = ("STREAM_SECONDS", "AdminLiveController")

#: The longest one dashboard stream stays open (the browser then reconnects, through the login check).
STREAM_SECONDS: Final = 300.0


def _services(request: Request[Any, Any, Any]) -> AdminServices:
    return request.app.state.admin_services  # type: ignore[no-any-return]


def _headers(request: Request[Any, Any, Any]) -> dict[str, str]:
    return {"Cache-Control": "no-store", "Content-Language": admin_locale(request), "X-Accel-Buffering": "no"}


def _keepalive() -> ServerSentEventMessage:
    return ServerSentEventMessage(comment="keep-alive", data=None)


class AdminLiveController(Controller):
    """Server-sent events of the jobs list and the job page."""

    path = "/admin"
    include_in_schema = False

    @get("/jobs/events", operation_id="AdminJobsEvents", cache=False)
    async def jobs_events(self, request: Request[Any, Any, Any]) -> ServerSentEvent | Template:
        """The rows of one page of the list, sent again after jobs change (event ``rows``)."""
        services = _services(request)
        parsed = parse_filter(request.query_params.dict())
        raw_cursor = request.query_params.get("cursor") or ""
        cursor = Cursor.decode(raw_cursor) if raw_cursor else None
        if raw_cursor and cursor is None:
            parsed.errors["cursor"] = "admin.filter.error.cursor"
        if not parsed.ok:
            return page(request, "admin/partials/job_rows.html", status_code=422, jobs=[], f=parsed)
        stale_after = services.settings.job_stale_after

        async def load() -> JobPage:
            async with services.database.sessions() as session:
                return await list_jobs(session, parsed.flt, stale_after=stale_after, after=cursor, limit=PAGE_SIZE)

        watch = services.live.query(("admin.jobs", parsed.query(cursor=raw_cursor)), load)
        return ServerSentEvent(_rows(request, watch, parsed, stale_after), headers=_headers(request))

    @get("/jobs/{job_id:uuid}/events", operation_id="AdminJobEvents", cache=False)
    async def job_events(self, request: Request[Any, Any, Any], job_id: FromPath[UUID]) -> ServerSentEvent:
        """The job page's live part on every change (event ``job``), then ``done`` once finished."""
        watch = _services(request).live.watch(job_id)
        try:
            job = await watch.current()
        except BaseException:
            watch.close()
            raise
        if job is None:
            watch.close()
            raise NotFoundException(detail="no such job")
        return ServerSentEvent(_job(request, watch), headers=_headers(request))


async def _rows(
    request: Request[Any, Any, Any], watch: QueryWatch[JobPage], parsed: ParsedFilter, stale_after: float
) -> AsyncIterator[SSEData]:
    with watch:
        deadline = time.monotonic() + STREAM_SECONDS
        last: str | None = None
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                async with asyncio.timeout(min(KEEPALIVE_SECONDS, remaining)):
                    result = await watch.next()
            except TimeoutError:
                yield _keepalive()
                continue
            html = render(
                request,
                "admin/partials/job_rows.html",
                jobs=result.jobs,
                f=parsed,
                stale_after=stale_after,
                is_stalled=_stalled,
            )
            if html != last:
                yield {"event": "rows", "data": html, "retry": RETRY_MILLISECONDS}
                last = html


async def _job(request: Request[Any, Any, Any], watch: JobWatch) -> AsyncIterator[SSEData]:
    settings = _services(request).settings
    with watch:
        deadline = time.monotonic() + STREAM_SECONDS
        last: str | None = None
        job = await watch.current()
        while job is not None:
            html = render(
                request,
                "admin/partials/job_live.html",
                job=job,
                steps=_step_states(job),
                stalled=_stalled(job, settings.job_stale_after),
                max_attempts=settings.job_max_retries + 1,
            )
            if html != last:
                yield {"event": "job", "data": html, "retry": RETRY_MILLISECONDS}
                last = html
            if job.status in FINAL_STATUSES:
                yield {"event": "done", "data": job.status}
                return
            while (remaining := deadline - time.monotonic()) > 0:
                try:
                    async with asyncio.timeout(min(KEEPALIVE_SECONDS, remaining)):
                        await watch.changed()
                    break
                except TimeoutError:
                    yield _keepalive()
            else:
                return
            job = await watch.current()
