"""Worker liveness: each worker process upserts a row in ``exam_worker_heartbeats`` every few seconds.

``exams_workers`` counts the fresh rows, whatever the broker (the broker's own heartbeats also
count web processes that merely enqueue). The row is deleted on a clean shutdown; a killed
process's row simply goes stale.
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import uuid
from collections.abc import Callable
from datetime import timedelta

import dramatiq
import structlog
from dramatiq.middleware import Middleware
from sqlalchemy import delete, select

from core.db import Database
from core.settings import Settings
from jobs.models import WorkerHeartbeat, utcnow

__all__ = ("HEARTBEAT_SECONDS", "LIVE_SECONDS", "WorkerHeartbeats")

HEARTBEAT_SECONDS = 5.0
#: A worker whose heartbeat is older than this is not counted as live.
LIVE_SECONDS = 30.0
#: Rows of workers gone this long are deleted.
FORGET_AFTER = timedelta(hours=1)

log = structlog.get_logger("jobs.heartbeat")


class WorkerHeartbeats(Middleware):
    """Dramatiq middleware: a thread per worker process refreshing its heartbeat row."""

    def __init__(self, settings: Settings, database_factory: Callable[[], Database]) -> None:
        self.settings = settings
        self._database_factory = database_factory
        self.worker_id = f"{socket.gethostname()[:40]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def after_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        """Start beating once the worker's threads run."""
        # The id is per process: Dramatiq forks after this middleware was built.
        self.worker_id = f"{socket.gethostname()[:40]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        threads = int(getattr(worker, "worker_threads", 0) or 0)
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, args=(threads,), name="exams-heartbeat", daemon=True)
        self._thread.start()

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        """Stop beating and remove this worker's row."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def _run(self, threads: int) -> None:
        asyncio.run(self._beat_forever(threads))

    async def _beat_forever(self, threads: int) -> None:
        database = self._database_factory()
        try:
            while not self._stop.is_set():
                try:
                    await self._beat(database, threads)
                except Exception as exc:  # noqa: BLE001  (the database may be away; keep trying)
                    log.warning("worker heartbeat failed", error=f"{type(exc).__name__}: {exc}"[:300])
                await self._sleep(HEARTBEAT_SECONDS)
            try:
                async with database.transaction() as session:
                    await session.execute(delete(WorkerHeartbeat).where(WorkerHeartbeat.worker_id == self.worker_id))
            except Exception:  # noqa: BLE001
                log.warning("worker heartbeat row not removed", worker_id=self.worker_id)
        finally:
            await database.dispose()

    async def _sleep(self, seconds: float) -> None:
        # Short naps rather than a thread-pool wait: nothing to cancel at interpreter exit.
        deadline = asyncio.get_running_loop().time() + seconds
        while not self._stop.is_set() and asyncio.get_running_loop().time() < deadline:  # noqa: ASYNC110  (a threading.Event, set from another thread)
            await asyncio.sleep(0.25)

    async def _beat(self, database: Database, threads: int) -> None:
        now = utcnow()
        async with database.transaction() as session:
            row = (
                await session.execute(select(WorkerHeartbeat).where(WorkerHeartbeat.worker_id == self.worker_id))
            ).scalar_one_or_none()
            if row is None:
                session.add(
                    WorkerHeartbeat(
                        worker_id=self.worker_id,
                        hostname=socket.gethostname()[:255],
                        pid=os.getpid(),
                        threads=threads,
                        queue_connection=self.settings.queue_connection,
                        heartbeat_at=now,
                    )
                )
                await session.execute(delete(WorkerHeartbeat).where(WorkerHeartbeat.heartbeat_at < now - FORGET_AFTER))
            else:
                row.heartbeat_at = now
