"""The dashboard's pages and actions under ``/admin`` (server-rendered, htmx fragments for live parts).

Pages: login, overview, jobs (live list, filters, keyset pages, cancel), one job (timeline,
callback deliveries, cancel, retry), failed jobs (groups, retry, delete, requeue), cleanup, audit
log. Every route but the login page requires a session
(see :mod:`admin.web`); every action is a POST with the CSRF token, limited to operators, and
audited; bulk actions are previewed with their exact count and confirmed first.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit
from uuid import UUID

from litestar import Controller, Request, Response, get, post
from litestar.datastructures import Cookie
from litestar.exceptions import NotFoundException
from litestar.params import FromPath
from litestar.response import Redirect, Template
from sqlalchemy import String, cast, or_, select

from admin.auth import authenticate, end_session, start_session
from admin.charts import hourly_chart, rate_chart
from admin.cleanup import CLEANUP_ACTION, cleanup_figures
from admin.filters import RANGES, STEP_CHOICES, ParsedFilter, parse_filter
from admin.formatting import Formatter
from admin.overview import build_overview
from admin.security import new_token, secrets_equal, sign
from admin.web import (
    LOGIN_COOKIE,
    SESSION_COOKIE,
    AdminServices,
    admin_locale,
    cookie_key,
    identity_of,
    is_htmx,
    page,
)
from core.audit import AuditEntry, record
from core.errors import AlreadyFinishedError
from i18n import gettext
from jobs.admin_queries import (
    RETRYABLE_STATUSES,
    STATUSES,
    Cursor,
    JobFilter,
    callback_deliveries,
    count_matching,
    delete_jobs,
    failed_among,
    failure_groups,
    job_ids_matching,
    list_jobs,
    lost_job_ids,
)
from jobs.cancel import cancel_job
from jobs.dispatch import send_callbacks
from jobs.live import JobSnapshot
from jobs.models import ExamProcessingJob, utcnow
from jobs.progress import PIPELINE_STEPS, STEPS
from jobs.services import JobService

__all__ = ("AdminController", "LoginController")

PAGE_SIZE = 50
#: A bulk action on more jobs than this asks the operator to type the count.
TYPED_CONFIRMATION_OVER = 20
OPERATOR = {"role": "operator"}
#: What a cancel can stop (the same rule as ``POST /api/exam-results/status/{id}/cancel``).
CANCELLABLE = ("pending", "processing")


def _services(request: Request[Any, Any, Any]) -> AdminServices:
    return request.app.state.admin_services  # type: ignore[no-any-return]


def _secure(request: Request[Any, Any, Any]) -> bool:
    return request.url.scheme == "https"


def _safe_next(raw: str | None) -> str:
    """Only a path of the dashboard (never another site) after login."""
    if not raw:
        return "/admin"
    parts = urlsplit(raw)
    if parts.scheme or parts.netloc or not parts.path.startswith("/admin") or parts.path.startswith("/admin/login"):
        return "/admin"
    return raw


def _stalled(job: JobSnapshot, stale_after: float) -> bool:
    heartbeat = job.heartbeat_at
    return (
        job.status == "processing" and heartbeat is not None and heartbeat < utcnow() - timedelta(seconds=stale_after)
    )


def _step_states(job: JobSnapshot) -> list[tuple[str, str]]:
    """``(step, done|current|failed|cancelled|todo)`` for the job page's timeline."""
    stopped_at = job.failed_step if job.status in ("failed", "cancelled") else None
    current = stopped_at or job.current_step
    index = STEPS.index(current) if current in STEPS else 0
    states: list[tuple[str, str]] = []
    for i, step in enumerate(STEPS):
        if job.status == "completed" or i < index:
            state = "done"
        elif i == index:
            state = job.status if stopped_at else "current"
        else:
            state = "todo"
        states.append((step, state))
    return states


class LoginController(Controller):
    """Logging in and out."""

    path = "/admin"
    include_in_schema = False

    @get("/login", operation_id="AdminLoginPage", opt={"public": True}, cache=False)
    async def login_page(self, request: Request[Any, Any, Any]) -> Template:
        """The login form (with a login CSRF token in a cookie and the form)."""
        token = new_token()
        response = page(
            request,
            "admin/login.html",
            login_token=token,
            next=_safe_next(request.query_params.get("next")),
            error_key=(request.query_params.get("error") == "expired" and "admin.login.expired") or None,
        )
        return _with_login_cookie(response, request, token)

    @post("/login", operation_id="AdminLogin", opt={"public": True}, status_code=303)
    async def login(self, request: Request[Any, Any, Any]) -> Response[Any]:
        """Check the password; on success start a new session and go to the page asked for."""
        services = _services(request)
        form = await request.form()
        username = str(form.get("username") or "").strip()
        password = str(form.get("password") or "")
        next_path = _safe_next(str(form.get("next") or ""))
        sent = str(form.get("_login") or "")
        expected = request.cookies.get(LOGIN_COOKIE) or ""
        if not expected or not secrets_equal(sent, expected):
            return self._again(request, "admin.login.error.stale", username, next_path, 403)
        if not username or not password:
            return self._again(request, "admin.login.error.missing", username, next_path, 422)
        async with services.database.transaction() as session:
            result = await authenticate(session, services.settings, username, password)
            token = None
            if result.role is not None:
                token = await start_session(session, services.settings, username, result.role)
                await record(session, actor=username.lower(), action="login", detail={"role": result.role})
        if result.locked_until is not None:
            minutes = max(1, int((result.locked_until - utcnow()).total_seconds() // 60) + 1)
            return self._again(request, "admin.login.error.locked", username, next_path, 429, minutes=minutes)
        if token is None:
            return self._again(request, "admin.login.error.wrong", username, next_path, 401)
        response = Redirect(next_path, status_code=303)
        response.set_cookie(
            SESSION_COOKIE,
            sign(token, cookie_key(services.settings)),
            path="/admin",
            httponly=True,
            samesite="lax",
            secure=_secure(request),
            max_age=services.settings.admin_session_minutes * 60,
        )
        response.delete_cookie(LOGIN_COOKIE, path="/admin/login")
        return response

    def _again(
        self, request: Request[Any, Any, Any], error_key: str, username: str, next_path: str, status: int, **params: Any
    ) -> Template:
        token = new_token()
        response = page(
            request,
            "admin/login.html",
            status_code=status,
            login_token=token,
            next=next_path,
            error_key=error_key,
            error_params=params,
            username=username,
        )
        return _with_login_cookie(response, request, token)

    @post("/logout", operation_id="AdminLogout", status_code=303)
    async def logout(self, request: Request[Any, Any, Any]) -> Response[Any]:
        """End the session everywhere and go back to the login page."""
        services = _services(request)
        async with services.database.transaction() as session:
            await end_session(session, request.state.admin_token)
            await record(session, actor=identity_of(request).username, action="logout")
        response = Redirect("/admin/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/admin")
        return response


class AdminController(Controller):
    """The dashboard's pages and actions."""

    path = "/admin"
    include_in_schema = False

    # --- overview --------------------------------------------------------------------------------

    async def _overview_context(self, request: Request[Any, Any, Any]) -> dict[str, Any]:
        services = _services(request)
        overview = await build_overview(services.database, services.monitoring, services.metrics)
        fmt = Formatter(admin_locale(request))
        locale = admin_locale(request)
        return {
            "o": overview,
            "statuses": STATUSES,
            "pipeline_steps": PIPELINE_STEPS,
            "chart": hourly_chart(overview.hourly, fmt, gettext("admin.overview.chart.label", locale)),
            "rate_chart": rate_chart(overview.hourly, fmt, gettext("admin.overview.rate.label", locale)),
        }

    @get("/", operation_id="AdminOverview", cache=False)
    async def overview(self, request: Request[Any, Any, Any]) -> Template:
        """Counts, throughput, failure rate, time per step, queue, workers, AI, charts of 24 h."""
        return page(request, "admin/overview.html", nav="overview", **await self._overview_context(request))

    @get("/overview/live", operation_id="AdminOverviewLive", cache=False)
    async def overview_live(self, request: Request[Any, Any, Any]) -> Template:
        """The overview's figures (polled every few seconds)."""
        return page(request, "admin/partials/overview_body.html", **await self._overview_context(request))

    # --- jobs list --------------------------------------------------------------------------------

    async def _jobs_context(self, request: Request[Any, Any, Any], parsed: ParsedFilter) -> dict[str, Any]:
        services = _services(request)
        raw_cursor = request.query_params.get("cursor") or ""
        cursor = Cursor.decode(raw_cursor) if raw_cursor else None
        if raw_cursor and cursor is None:
            parsed.errors["cursor"] = "admin.filter.error.cursor"
        jobs: list[ExamProcessingJob] = []
        next_cursor = None
        if parsed.ok:
            async with services.database.sessions() as session:
                result = await list_jobs(
                    session, parsed.flt, stale_after=services.settings.job_stale_after, after=cursor, limit=PAGE_SIZE
                )
            jobs, next_cursor = result.jobs, result.next_cursor
        return {
            "jobs": jobs,
            "f": parsed,
            "cursor": raw_cursor if cursor else "",
            "next_cursor": next_cursor.encode() if next_cursor else "",
            "statuses": STATUSES,
            "steps": STEP_CHOICES,
            "ranges": list(RANGES),
            "stale_after": services.settings.job_stale_after,
            "is_stalled": _stalled,
        }

    @get("/jobs", operation_id="AdminJobs", cache=False)
    async def jobs(self, request: Request[Any, Any, Any]) -> Template:
        """The live jobs list with its filters (newest first, keyset pages; rows kept live by
        ``admin.live``'s server-sent events)."""
        parsed = parse_filter(request.query_params.dict())
        context = await self._jobs_context(request, parsed)
        return page(request, "admin/jobs.html", nav="jobs", status_code=200 if parsed.ok else 422, **context)

    # --- one job ----------------------------------------------------------------------------------

    async def _job_context(self, request: Request[Any, Any, Any], job_id: UUID) -> dict[str, Any]:
        services = _services(request)
        async with services.database.sessions() as session:
            job = await JobService(session=session).get_by_job_id(job_id)
            if job is None:
                raise NotFoundException(detail="no such job")
            history = list(
                (
                    await session.execute(
                        select(AuditEntry)
                        .where(
                            or_(
                                cast(AuditEntry.target, String).contains(str(job_id)),
                                cast(AuditEntry.detail, String).contains(str(job_id)),
                            )
                        )
                        .order_by(AuditEntry.created_at.desc())
                        .limit(20)
                    )
                )
                .scalars()
                .all()
            )
            deliveries = await callback_deliveries(session, job_id)
        return {
            "job": job,
            "steps": _step_states(job),
            "stalled": _stalled(job, services.settings.job_stale_after),
            "history": history,
            "deliveries": deliveries,
            "max_attempts": services.settings.job_max_retries + 1,
        }

    @get("/jobs/{job_id:uuid}", operation_id="AdminJob", cache=False)
    async def job(self, request: Request[Any, Any, Any], job_id: FromPath[UUID]) -> Template:
        """One job: timeline of steps and attempts, answers, result or error, operator history."""
        return page(request, "admin/job.html", nav="jobs", **await self._job_context(request, job_id))

    @get("/jobs/{job_id:uuid}/live", operation_id="AdminJobLive", cache=False)
    async def job_live(self, request: Request[Any, Any, Any], job_id: FromPath[UUID]) -> Template:
        """The job page's live part (fetched after a cancel from the page; ``admin.live`` streams its changes)."""
        context = await self._job_context(request, job_id)
        # 286 tells htmx to stop polling: a finished job does not change any more.
        status = 286 if context["job"].is_finished else 200
        return page(request, "admin/partials/job_live.html", status_code=status, **context)

    # --- cancel one job -----------------------------------------------------------------------------

    def _cancel_refused(
        self, request: Request[Any, Any, Any], job_id: UUID, job: ExamProcessingJob | None
    ) -> Template | None:
        """A notice when ``job`` cannot be cancelled (unknown, or already finished), else ``None``."""
        if job is None:
            return self._notice(request, "admin.cancel.error.missing", 404, back="/admin/jobs")
        if job.status == "cancelled":
            return self._notice(request, "admin.cancel.already", 200, kind="success", back=f"/admin/jobs/{job_id}")
        if job.status not in CANCELLABLE:
            label = gettext(f"status.{job.status}", admin_locale(request))
            return self._notice(request, "admin.cancel.error.finished", 409, back=f"/admin/jobs/{job_id}", status=label)
        return None

    @post("/jobs/{job_id:uuid}/cancel/preview", operation_id="AdminCancelPreview", opt=OPERATOR, status_code=200)
    async def cancel_preview(self, request: Request[Any, Any, Any], job_id: FromPath[UUID]) -> Template:
        """Ask to confirm the cancel of a pending or processing job (changes nothing)."""
        async with _services(request).database.sessions() as session:
            job = await JobService(session=session).get_by_job_id(job_id)
        refused = self._cancel_refused(request, job_id, job)
        if refused is not None:
            return refused
        template = "admin/partials/cancel_confirm.html" if is_htmx(request) else "admin/action.html"
        return page(request, template, cancel_job=job, back=f"/admin/jobs/{job_id}")

    @post("/jobs/{job_id:uuid}/cancel", operation_id="AdminCancel", opt=OPERATOR, status_code=200)
    async def cancel(self, request: Request[Any, Any, Any], job_id: FromPath[UUID]) -> Template:
        """Cancel a confirmed pending or processing job through the cancel service (same rules as
        the API: a running job stops within 2 s; its callback, if any, is sent), and audit it."""
        services = _services(request)
        form = _form_dict(await request.form())
        if str(form.get("confirm") or "") != "yes":
            return self._notice(request, "admin.cancel.error.unconfirmed", 422, back=f"/admin/jobs/{job_id}")
        try:
            cancellation = await cancel_job(services.database, job_id)
        except AlreadyFinishedError as exc:
            label = gettext(f"status.{exc.params.get('status')}", admin_locale(request))
            return self._notice(request, "admin.cancel.error.finished", 409, back=f"/admin/jobs/{job_id}", status=label)
        if cancellation is None:
            return self._notice(request, "admin.cancel.error.missing", 404, back="/admin/jobs")
        if not cancellation.changed:
            return self._notice(request, "admin.cancel.already", 200, kind="success", back=f"/admin/jobs/{job_id}")
        job = cancellation.job
        async with services.database.transaction() as session:
            await record(
                session,
                actor=identity_of(request).username,
                action="jobs.cancel",
                target={"job_ids": [str(job_id)]},
                count=1,
                detail={"step": job.failed_step, "progress": job.progress, "exam_code": job.exam_code},
            )
        if cancellation.delivery_id is not None:
            await send_callbacks(services.broker, [cancellation.delivery_id])
        response = self._notice(request, "admin.cancel.done", 200, kind="success", back=f"/admin/jobs/{job_id}")
        response.headers["HX-Trigger"] = "job-changed"
        return response

    # --- failed jobs ------------------------------------------------------------------------------

    @get("/failed", operation_id="AdminFailed", cache=False)
    async def failed(self, request: Request[Any, Any, Any]) -> Template:
        """Failed jobs grouped by cause, the failed jobs themselves, and recovery of lost messages."""
        services = _services(request)
        parsed = parse_filter({**request.query_params.dict(), "status": "failed"})
        async with services.database.sessions() as session:
            groups = await failure_groups(session)
            result = None
            if parsed.ok:
                result = await list_jobs(
                    session, parsed.flt, stale_after=services.settings.job_stale_after, limit=PAGE_SIZE
                )
            total = await count_matching(session, parsed.flt, stale_after=services.settings.job_stale_after)
        return page(
            request,
            "admin/failed.html",
            nav="failed",
            groups=groups,
            jobs=result.jobs if result else [],
            total=total,
            f=parsed,
            steps=STEP_CHOICES,
            ranges=list(RANGES),
            operations=services.operations.recent()[:5],
        )

    # --- bulk actions: preview (exact count) then run -----------------------------------------------

    async def _selection(
        self, request: Request[Any, Any, Any], form: dict[str, Any]
    ) -> tuple[list[UUID], dict[str, Any], str | None]:
        """The failed jobs a form selects (ids, the audit target) or an error key.

        Jobs picked by id (one job, or those ticked) may also be cancelled ones: an operator may
        retry (or delete) a cancelled job like a failed one. Groups and filters are failed jobs.
        """
        services = _services(request)
        scope = str(form.get("scope") or "")
        frozen_raw = str(form.get("failed_before") or "")
        failed_before = utcnow()
        if frozen_raw:
            try:
                failed_before = datetime.fromisoformat(frozen_raw)
            except ValueError:
                return [], {}, "admin.action.error.scope"
        async with services.database.sessions() as session:
            if scope in ("job", "selected"):
                raw_ids = form.get("job_id") or []
                raw_list = raw_ids if isinstance(raw_ids, list) else [raw_ids]
                try:
                    ids = [UUID(str(v)) for v in raw_list if str(v).strip()]
                except ValueError:
                    return [], {}, "admin.action.error.ids"
                if not ids:
                    return [], {}, "admin.action.error.none_selected"
                if len(ids) > 1000:
                    return [], {}, "admin.action.error.too_many"
                chosen = await failed_among(session, ids, failed_before=failed_before, statuses=RETRYABLE_STATUSES)
                return chosen, {"job_ids": [str(i) for i in ids]}, None
            if scope == "group":
                key = str(form.get("group") or "")
                groups = {g.key: g for g in await failure_groups(session)}
                group = groups.get(key)
                if group is None:
                    return [], {}, "admin.action.error.group"
                flt = JobFilter(status="failed", failed_before=failed_before)
                ids = await job_ids_matching(session, flt, stale_after=services.settings.job_stale_after, group=group)
                target = {
                    "group": {"step": group.step, "code": group.code, "cause": group.cause},
                    "failed_before": failed_before.isoformat(),
                }
                return ids, target, None
            if scope == "filter":
                parsed = parse_filter({**form, "status": "failed"})
                if not parsed.ok:
                    return [], {}, next(iter(parsed.errors.values()))
                flt = JobFilter(**{**_filter_fields(parsed.flt), "failed_before": failed_before})
                ids = await job_ids_matching(session, flt, stale_after=services.settings.job_stale_after)
                return ids, {"filter": parsed.flt.describe(), "failed_before": failed_before.isoformat()}, None
        return [], {}, "admin.action.error.scope"

    @post("/actions/preview", operation_id="AdminActionPreview", opt=OPERATOR, status_code=200)
    async def action_preview(self, request: Request[Any, Any, Any]) -> Template:
        """Count exactly what a retry or delete would change, and ask to confirm."""
        form = _form_dict(await request.form())
        action = str(form.get("action") or "")
        if action not in ("retry", "delete"):
            return self._notice(request, "admin.action.error.action", 422)
        frozen = utcnow().isoformat()
        form["failed_before"] = frozen
        ids, target, error = await self._selection(request, form)
        if error is not None:
            return self._notice(request, error, 422)
        fields = {k: v for k, v in form.items() if k not in ("_csrf", "action", "confirm_count")}
        template = "admin/partials/confirm.html" if is_htmx(request) else "admin/action.html"
        return page(
            request,
            template,
            action=action,
            count=len(ids),
            fields=fields,
            typed=len(ids) > TYPED_CONFIRMATION_OVER,
            target=target,
            rate=_services(request).settings.admin_retry_rate,
        )

    @post("/actions/run", operation_id="AdminActionRun", opt=OPERATOR, status_code=200)
    async def action_run(self, request: Request[Any, Any, Any]) -> Template:
        """Retry (in the background, at a bounded rate) or delete the confirmed failed jobs."""
        services = _services(request)
        form = _form_dict(await request.form())
        action = str(form.get("action") or "")
        if action not in ("retry", "delete"):
            return self._notice(request, "admin.action.error.action", 422)
        if not form.get("failed_before"):
            return self._notice(request, "admin.action.error.scope", 422)
        try:
            expected = int(str(form.get("expected") or ""))
        except ValueError:
            return self._notice(request, "admin.action.error.scope", 422)
        if expected > TYPED_CONFIRMATION_OVER and str(form.get("confirm_count") or "").strip() != str(expected):
            return self._notice(request, "admin.action.error.typed", 422, count=expected)
        ids, target, error = await self._selection(request, form)
        if error is not None:
            return self._notice(request, error, 422)
        actor = identity_of(request).username
        target = {**target, "confirmed_count": expected}
        if action == "retry":
            op = await services.operations.start_retry(actor, ids, target)
            return page(request, "admin/partials/operation.html" if is_htmx(request) else "admin/action.html", op=op)
        async with services.database.transaction() as session:
            deleted = await delete_jobs(session, ids, statuses=RETRYABLE_STATUSES)
            await record(
                session,
                actor=actor,
                action="jobs.delete",
                target=target,
                count=deleted,
                detail={"job_ids": [str(i) for i in ids[:1000]]},
            )
        return self._notice(request, "admin.action.deleted", 200, kind="success", count=deleted)

    def _notice(
        self,
        request: Request[Any, Any, Any],
        key: str,
        http_status: int,
        /,
        kind: str = "error",
        back: str | None = None,
        **params: Any,
    ) -> Template:
        """A localized message (``params`` fill its placeholders) as a fragment, or a whole page."""
        template = "admin/partials/notice.html" if is_htmx(request) else "admin/action.html"
        return page(
            request, template, status_code=http_status, kind=kind, message_key=key, message_params=params, back=back
        )

    @get("/operations/{op_id:int}", operation_id="AdminOperation", cache=False)
    async def operation(self, request: Request[Any, Any, Any], op_id: FromPath[int]) -> Template:
        """Progress of a background operation (polled while it runs)."""
        op = _services(request).operations.get(op_id)
        if op is None:
            raise NotFoundException(detail="no such operation")
        return page(request, "admin/partials/operation.html", op=op)

    # --- requeue lost messages -------------------------------------------------------------------

    def _requeue_params(self, form: dict[str, Any]) -> tuple[float | None, float | None, str | None]:
        raw = str(form.get("pending_older_than") or "").strip()
        pending: float | None = None
        if raw:
            try:
                pending = float(raw)
            except ValueError:
                return None, None, "admin.requeue.error.seconds"
            if not 0 <= pending <= 30 * 86400:
                return None, None, "admin.requeue.error.seconds"
        stalled = bool(form.get("stalled"))
        if pending is None and not stalled:
            return None, None, "admin.requeue.error.nothing"
        return pending, (1.0 if stalled else None), None

    async def _lost_jobs(
        self, request: Request[Any, Any, Any], form: dict[str, Any]
    ) -> Template | tuple[float | None, float | None, list[UUID], list[UUID]]:
        """The requeue form's jobs: (pending after, stalled flag, pending ids, stalled ids), or a 422 notice."""
        services = _services(request)
        pending_after, stalled_flag, error = self._requeue_params(form)
        if error is not None:
            return self._notice(request, error, 422)
        async with services.database.sessions() as session:
            pending, stalled = await lost_job_ids(
                session,
                pending_older_than=pending_after,
                stalled_after=services.settings.job_stale_after if stalled_flag else None,
            )
        return pending_after, stalled_flag, pending, stalled

    @post("/requeue/preview", operation_id="AdminRequeuePreview", opt=OPERATOR, status_code=200)
    async def requeue_preview(self, request: Request[Any, Any, Any]) -> Template:
        """Count pending jobs older than N seconds and stalled jobs whose message may be lost."""
        form = _form_dict(await request.form())
        found = await self._lost_jobs(request, form)
        if isinstance(found, Template):
            return found
        _pending_after, _stalled_flag, pending, stalled = found
        return page(
            request,
            "admin/partials/requeue_confirm.html",
            pending=len(pending),
            stalled=len(stalled),
            fields={k: v for k, v in form.items() if k != "_csrf"},
        )

    @post("/requeue/run", operation_id="AdminRequeueRun", opt=OPERATOR, status_code=200)
    async def requeue_run(self, request: Request[Any, Any, Any]) -> Template:
        """Send the lost jobs again (paced) and audit it."""
        services = _services(request)
        form = _form_dict(await request.form())
        found = await self._lost_jobs(request, form)
        if isinstance(found, Template):
            return found
        pending_after, stalled_flag, pending, stalled = found
        target = {"pending_older_than": pending_after, "stalled": bool(stalled_flag)}
        op = await services.operations.start_requeue(identity_of(request).username, pending, stalled, target)
        return page(request, "admin/partials/operation.html", op=op)

    # --- cleanup ------------------------------------------------------------------------------------

    @get("/cleanup", operation_id="AdminCleanup", cache=False)
    async def cleanup(self, request: Request[Any, Any, Any]) -> Template:
        """Retention in force, last runs, preview and run."""
        services = _services(request)
        async with services.database.sessions() as session:
            figures = await cleanup_figures(session)
            runs = list(
                (
                    await session.execute(
                        select(AuditEntry)
                        .where(AuditEntry.action == CLEANUP_ACTION)
                        .order_by(AuditEntry.created_at.desc(), AuditEntry.id.desc())
                        .limit(10)
                    )
                )
                .scalars()
                .all()
            )
        return page(
            request,
            "admin/cleanup.html",
            nav="cleanup",
            figures=figures,
            runs=runs,
            days=services.settings.job_retention_days,
            running=services.operations.running("cleanup"),
        )

    def _days(self, form: dict[str, Any], default: int) -> int | None:
        raw = str(form.get("days") or "").strip()
        if not raw:
            return default
        try:
            days = int(raw)
        except ValueError:
            return None
        return days if 1 <= days <= 3650 else None

    @post("/cleanup/preview", operation_id="AdminCleanupPreview", opt=OPERATOR, status_code=200)
    async def cleanup_preview(self, request: Request[Any, Any, Any]) -> Template:
        """How many finished jobs a cleanup would delete now."""
        services = _services(request)
        form = _form_dict(await request.form())
        days = self._days(form, services.settings.job_retention_days)
        if days is None:
            return self._notice(request, "admin.cleanup.error.days", 422)
        cutoff = utcnow() - timedelta(days=days)
        async with services.database.sessions() as session:
            count = await JobService(session=session).count_finished_before(cutoff)
        return page(request, "admin/partials/cleanup_preview.html", count=count, days=days, cutoff=cutoff)

    @post("/cleanup/run", operation_id="AdminCleanupRun", opt=OPERATOR, status_code=200)
    async def cleanup_run(self, request: Request[Any, Any, Any]) -> Template:
        """Start the cleanup in the background (one at a time); its progress is polled."""
        services = _services(request)
        form = _form_dict(await request.form())
        days = self._days(form, services.settings.job_retention_days)
        if days is None:
            return self._notice(request, "admin.cleanup.error.days", 422)
        running = services.operations.running("cleanup")
        if running is not None:
            return page(request, "admin/partials/operation.html", op=running)
        cutoff = utcnow() - timedelta(days=days)
        async with services.database.sessions() as session:
            total = await JobService(session=session).count_finished_before(cutoff)
        op = await services.operations.start_cleanup(identity_of(request).username, days, total)
        return page(request, "admin/partials/operation.html", op=op)

    # --- audit log -----------------------------------------------------------------------------------

    @get("/audit", operation_id="AdminAudit", cache=False)
    async def audit(self, request: Request[Any, Any, Any]) -> Template:
        """Every operator action, newest first (keyset pages on the entry id)."""
        services = _services(request)
        before_raw = request.query_params.get("before") or ""
        before = int(before_raw) if before_raw.isdigit() else None
        stmt = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(PAGE_SIZE + 1)
        if before is not None:
            stmt = stmt.where(AuditEntry.id < before)
        async with services.database.sessions() as session:
            entries = list((await session.execute(stmt)).scalars().all())
        more = len(entries) > PAGE_SIZE
        entries = entries[:PAGE_SIZE]
        return page(
            request,
            "admin/audit.html",
            nav="audit",
            entries=entries,
            next_before=entries[-1].id if more and entries else None,
            paged=before is not None,
        )


def _with_login_cookie(response: Template, request: Request[Any, Any, Any], token: str) -> Template:
    """Attach the login form's own token cookie (its CSRF pair), valid for an hour on /admin/login."""
    response.cookies.append(
        Cookie(
            key=LOGIN_COOKIE,
            value=token,
            path="/admin/login",
            httponly=True,
            samesite="lax",
            secure=_secure(request),
            max_age=3600,
        )
    )
    return response


def _form_dict(form: Any) -> dict[str, Any]:
    """A form as a dict; repeated fields (``job_id``) become lists."""
    result: dict[str, Any] = {}
    for key in form:
        values = form.getall(key)
        result[key] = values if key == "job_id" or len(values) > 1 else values[0]
    return result


def _filter_fields(flt: JobFilter) -> dict[str, Any]:
    return {name: getattr(flt, name) for name in flt.__struct_fields__}
