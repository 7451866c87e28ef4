"""The Litestar application: one ``create_app()`` wiring database, broker, routes and docs."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import structlog
from advanced_alchemy.extensions.litestar import SQLAlchemyPlugin
from litestar import Litestar, Router
from litestar.config.compression import CompressionConfig
from litestar.config.cors import CORSConfig
from litestar.datastructures import State
from litestar.di import Provide
from litestar.openapi.config import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin, SwaggerRenderPlugin
from litestar.openapi.spec import Components
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.plugins.prometheus import PrometheusConfig
from litestar.static_files import create_static_files_router
from litestar.template.config import TemplateConfig

from access.web import SECURITY_SCHEME, ApiAccess, provide_principal, security_scheme
from admin.cleanup import CleanupMonitor
from admin.operations import Operations
from admin.routes import admin_router
from admin.web import AdminServices
from core.logging import configure_logging
from core.request_log import RequestLogMiddleware
from core.settings import Settings, load_settings
from core.web import exception_handlers
from exams.catalog_cache import ExamCache
from exams.controllers import ExamsController
from exams.pages import student_page
from jobs.controllers import ExamResultsController
from jobs.dispatch import requeue_unfinished
from jobs.embedded import EmbeddedWorker
from jobs.maintenance import run_scheduler
from jobs.monitoring import MonitoringCache
from jobs.results_api import ExamResultsReadController, exam_results_summary
from server.health import health, ready
from server.metrics_endpoint import (
    forget_dead_processes,
    mark_this_process_dead,
    metrics_endpoint,
    process_registry,
)
from server.migrate import alchemy_config
from server.wiring import Wiring

__all__ = ("REPO_ROOT", "create_app")

REPO_ROOT = Path(__file__).resolve().parents[2]
STATIC_DIR = Path(__file__).parent / "static"
MAX_BODY_BYTES = 1024 * 1024
#: How often the embedded process looks for jobs no worker will run (stalled or never sent).
RECONCILE_SECONDS = 10.0
_VERSIONED_ASSETS = ("css/app.css", "css/admin.css", "js/student.js", "js/admin.js")

log = structlog.get_logger("server.app")


def asset_version() -> str:
    """A content hash for asset URLs, so a new release is never served stale CSS or JS."""
    digest = hashlib.sha256()
    for name in _VERSIONED_ASSETS:
        path = STATIC_DIR / name
        digest.update(path.read_bytes() if path.exists() else name.encode())
    return digest.hexdigest()[:12]


def _cors(settings: Settings) -> CORSConfig | None:
    """Let a school's front end on another origin submit and poll (off unless configured)."""
    if not settings.cors_allow_origins:
        return None
    return CORSConfig(
        allow_origins=list(settings.cors_allow_origins),
        allow_methods=["GET", "POST", "OPTIONS"],
        allow_headers=[
            "Authorization",
            "Content-Type",
            "Accept-Language",
            "Idempotency-Key",
            "X-Request-ID",
            "Last-Event-ID",
        ],
        expose_headers=["Location", "Retry-After", "Content-Language", "X-Request-ID", "WWW-Authenticate"],
        max_age=3600,
    )


def create_app(settings: Settings | None = None) -> Litestar:
    """Build the web application (with the embedded worker when ``QUEUE_CONNECTION=embedded``).

    Without ``settings`` they are read from the environment (``exams serve --workers N`` starts
    each process that way).
    """
    settings = settings or load_settings()
    configure_logging(settings.log_format, settings.log_level)
    wiring = Wiring(settings)
    database = wiring.database()
    broker, _actor = wiring.broker(worker=False)
    # API_AUTH and SUBMIT_RATE_LIMIT: the guard of every /api/exam-results… route.
    access = ApiAccess(settings, database, wiring.submit_limiter(database))
    monitoring = MonitoringCache(database, broker, settings)
    operations = Operations(database, broker, settings)
    # Event streams and the dashboard's live parts: one subscription to job changes per process.
    live = wiring.live_jobs(database)
    admin_services = AdminServices(
        settings=settings,
        database=database,
        broker=broker,
        monitoring=monitoring,
        metrics=lambda: list(process_registry(settings).collect()),
        operations=operations,
        live=live,
    )
    exam_cache = ExamCache()
    metrics_dir = settings.prometheus_multiproc_dir or None
    prometheus = PrometheusConfig(
        app_name="exams",
        prefix="exams_http",
        group_path=True,
        exclude=["/metrics", "/health", "/static"],
        buckets=[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    )
    embedded = EmbeddedWorker(broker, settings) if settings.queue_connection == "embedded" else None

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        tasks: list[asyncio.Task[None]] = []
        forget_dead_processes(metrics_dir)
        await live.start()
        if embedded is not None:
            embedded.start()
            try:
                await requeue_unfinished(broker, database)
            except Exception:
                log.exception("could not pick up unfinished jobs at start-up")
            scheduler = run_scheduler(
                database,
                broker,
                settings,
                reconcile_every=RECONCILE_SECONDS,
                first_cleanup_after=RECONCILE_SECONDS,
            )
            tasks.append(asyncio.create_task(scheduler))
        log.info(
            "web app started",
            queue_connection=settings.queue_connection,
            database=database.engine.url.get_backend_name(),
        )
        try:
            yield
        finally:
            await operations.stop()
            await live.stop()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if embedded is not None:
                await asyncio.to_thread(embedded.stop)
            await access.aclose()
            await database.dispose()
            mark_this_process_dead(metrics_dir)

    def provide(value: object) -> Provide:
        return Provide(lambda: value, use_cache=True, sync_to_thread=False)

    def template_globals(engine: JinjaTemplateEngine) -> None:
        engine.engine.globals["asset_version"] = asset_version()

    return Litestar(
        route_handlers=[
            Router(
                path="/",
                route_handlers=[ExamResultsController, ExamResultsReadController],
                guards=[access.guard],
                security=access.security(),
            ),
            ExamsController,
            exam_results_summary,
            health,
            ready,
            metrics_endpoint,
            student_page,
            admin_router(),
            create_static_files_router(path="/static", directories=[STATIC_DIR], include_in_schema=False),
        ],
        dependencies={
            "settings": provide(settings),
            "database": provide(database),
            "broker": provide(broker),
            "exam_cache": provide(exam_cache),
            "monitoring": provide(monitoring),
            "live": provide(live),
            "cleanup_monitor": provide(CleanupMonitor(database)),
            "api_access": provide(access),
            "principal": Provide(provide_principal, sync_to_thread=False),
        },
        plugins=[SQLAlchemyPlugin(config=alchemy_config(settings, database.engine))],
        middleware=[RequestLogMiddleware, prometheus.middleware],
        lifespan=[lifespan],
        state=State({"admin_services": admin_services}),
        exception_handlers=exception_handlers,
        request_max_body_size=MAX_BODY_BYTES,
        cors_config=_cors(settings),
        compression_config=CompressionConfig(backend="gzip", minimum_size=1024, exclude=[r"/events$"]),
        template_config=TemplateConfig(
            directory=REPO_ROOT / "templates", engine=JinjaTemplateEngine, engine_callback=template_globals
        ),
        openapi_config=OpenAPIConfig(
            title="Async Exam Processing",
            version="1.0.0",
            description=(
                "Submit exam answers and follow their grading and AI study recommendations "
                "asynchronously: `POST /api/exam-results/process` answers `202` with a `job_id`; "
                "poll `GET /api/exam-results/status/{job_id}` every 2 s or listen to its `/events`. "
                "Errors are RFC 9457 problem documents; `Accept-Language: ar` (or `?lang=ar`) "
                "localises every human-readable string."
            ),
            path="/api/documentation",
            use_handler_docstrings=True,
            components=Components(security_schemes={SECURITY_SCHEME: security_scheme()}),
            render_plugins=[
                SwaggerRenderPlugin(
                    path="/",
                    js_url="/static/vendor/swagger-ui-bundle.js",
                    css_url="/static/vendor/swagger-ui.css",
                    standalone_preset_js_url="/static/vendor/swagger-ui-standalone-preset.js",
                    favicon='<link rel="icon" type="image/png" href="/static/vendor/favicon-32x32.png">',
                ),
                JsonRenderPlugin(path="/openapi.json"),
            ],
        ),
        debug=False,
        logging_config=None,
    )
