"""The composition root: what every process of the product is built from.

The web app, the embedded worker, ``exams worker`` processes, the scheduler and each CLI
command get their database, broker and AI client from a :class:`Wiring` made from the
:class:`~core.settings.Settings` they started with; nothing below reads the environment again.
"""

from __future__ import annotations

from typing import Any, cast

import dramatiq
import httpx
from dramatiq.middleware import Middleware

from access.rate_limit import LocalRateLimiter, Rate, RateLimiter, RedisRateLimiter, SqlRateLimiter
from ai_client import AIClient, create_fake_ai_app
from core.db import Database
from core.settings import Settings
from jobs.actors import CloseRuntime, JobActor, declare_actors
from jobs.ai_guard import AIGuard, GuardLimits, LocalAIGuard, RedisAIGuard, SqlAIGuard
from jobs.broker import create_broker
from jobs.heartbeat import WorkerHeartbeats
from jobs.live import LOCAL_CHANGES, HubChanges, LiveJobs, PostgresChanges, publish_job_changes
from jobs.pipeline import PipelineRuntime

__all__ = ("BUILTIN_FAKE_AI_URL", "Wiring", "build_ai_client")

#: Seconds a worker's job waits for a pooled database connection.
WORKER_POOL_TIMEOUT = 60.0
#: Base URL the in-process fake AI answers on (never leaves the process).
BUILTIN_FAKE_AI_URL = "http://builtin-fake-ai/v1"


def build_ai_client(settings: Settings) -> AIClient | None:
    """The AI client for ``settings``; ``None`` when the AI is disabled.

    With no ``AI_API_BASE_URL`` the client talks to the built-in fake AI inside this process
    (over an ASGI transport), so a first run needs no AI account.
    """
    if not settings.ai_api_enabled:
        return None
    if settings.ai_api_base_url:
        return AIClient(
            base_url=settings.ai_api_base_url,
            api_key=settings.ai_api_key,
            model=settings.ai_api_model,
            timeout=settings.ai_api_timeout,
            # The AI guard lets at most AI_MAX_CONCURRENCY requests out at once, fleet-wide.
            max_connections=settings.ai_max_concurrency,
        )
    app = create_fake_ai_app(latency=settings.fake_ai_latency, error_rate=0.0)
    return AIClient(
        base_url=BUILTIN_FAKE_AI_URL,
        api_key=None,
        model=settings.ai_api_model,
        timeout=settings.ai_api_timeout,
        transport=httpx.ASGITransport(app=cast("Any", app)),
    )


class Wiring:
    """Builds the product's parts from one :class:`Settings`."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._local_guard: LocalAIGuard | None = None
        # Every job change this process writes is published (jobs.live), whoever writes it.
        publish_job_changes()

    def database(self) -> Database:
        """A new engine and session factory (one per event loop; dispose it when done)."""
        return Database.from_settings(self.settings)

    def pipeline_runtime(self) -> PipelineRuntime:
        """What a worker runs jobs with; built on the event loop that runs them.

        Its jobs share one pool (20 + 10 connections): each holds a connection only for one
        write, and when all are busy a job waits its turn (up to a minute) rather than fail.
        """
        database = Database.from_settings(self.settings, pool_timeout=WORKER_POOL_TIMEOUT)
        ai = build_ai_client(self.settings)
        guard = self.ai_guard(database) if ai is not None else None
        return PipelineRuntime(settings=self.settings, database=database, ai=ai, guard=guard)

    def ai_guard(self, database: Database) -> AIGuard:
        """The AI limits, pauses and circuit breaker, shared as widely as the workers are spread.

        ``redis``: in Redis (every host); ``rabbitmq``: in the database's tables (every host);
        ``embedded``: in this process (one guard for all its event loops).
        """
        settings = self.settings
        limits = GuardLimits.from_settings(settings)
        if settings.queue_connection == "redis":
            return RedisAIGuard.from_url(limits, settings.redis_url)
        if settings.queue_connection == "rabbitmq":
            return SqlAIGuard(limits, database)
        if self._local_guard is None:
            self._local_guard = LocalAIGuard(limits)
        return self._local_guard

    def submit_limiter(self, database: Database) -> RateLimiter | None:
        """``SUBMIT_RATE_LIMIT``'s counters (``None``: no limit), shared by every web process.

        ``redis``: in Redis (every host); otherwise PostgreSQL's ``api_rate_limits`` (every
        host); ``embedded`` on SQLite: in this process (the only one). ``rabbitmq`` on SQLite
        (one host's processes): the SQLite table.
        """
        settings = self.settings
        rate = Rate.parse(settings.submit_rate_limit)
        if rate is None:
            return None
        if settings.queue_connection == "redis":
            return RedisRateLimiter.from_url(rate, settings.redis_url)
        if not settings.is_sqlite or settings.queue_connection != "embedded":
            return SqlRateLimiter(rate, database)
        return LocalRateLimiter(rate)

    def live_jobs(self, database: Database) -> LiveJobs:
        """The web process's live job updates (event streams, the dashboard's live parts).

        PostgreSQL: one ``LISTEN`` connection hears every process's changes. Otherwise (SQLite,
        one process in production use): this process's own changes; a worker process elsewhere
        is only seen by the slow re-read.
        """
        if database.engine.url.get_backend_name() == "postgresql":
            return LiveJobs(database, PostgresChanges(self.settings.database_url))
        return LiveJobs(database, HubChanges(LOCAL_CHANGES))

    def broker(self, *, worker: bool) -> tuple[dramatiq.Broker, JobActor]:
        """The broker with the job actor declared on it.

        ``worker``: this process consumes jobs (``exams worker``, or the embedded web process),
        so the actor gets a runtime, the process reports its heartbeat and, in multiprocess
        mode, Dramatiq's own metrics.
        """
        settings = self.settings
        consumes = worker or settings.queue_connection == "embedded"
        middleware: list[Middleware] = []
        if consumes:
            middleware.append(WorkerHeartbeats(settings, self.database))
        if worker and settings.queue_connection != "embedded" and settings.prometheus_multiproc_dir:
            # Dramatiq's own metrics into the shared directory, so the web app's /metrics shows
            # them; its exporter also serves them on dramatiq_prom_port (9191) for other hosts.
            from dramatiq.middleware.prometheus import Prometheus

            middleware.append(Prometheus())
        broker = create_broker(settings, middleware)
        actor = declare_actors(broker, settings, self.pipeline_runtime if consumes else None)
        if consumes:
            # After AsyncIO in the list: "after" hooks run in reverse, so this one runs while the
            # loop the runtime lives on is still up.
            broker.add_middleware(CloseRuntime(actor))
        return broker, actor
