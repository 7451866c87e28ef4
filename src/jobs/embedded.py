"""The in-process Dramatiq worker of ``QUEUE_CONNECTION=embedded`` (a laptop's first run)."""

from __future__ import annotations

import dramatiq
import structlog

from core.settings import Settings

__all__ = ("EmbeddedWorker",)

log = structlog.get_logger("jobs.embedded")


class EmbeddedWorker:
    """Worker threads inside the web process, working the in-memory broker."""

    def __init__(self, broker: dramatiq.Broker, settings: Settings) -> None:
        self.broker = broker
        self.settings = settings
        self.worker: dramatiq.Worker | None = None

    def start(self) -> None:
        """Boot the middleware (time limits need ``process_boot``) and start the threads."""
        self.broker.emit_after("process_boot")
        self.worker = dramatiq.Worker(self.broker, worker_threads=self.settings.worker_threads, worker_timeout=100)
        self.worker.start()
        log.info("embedded worker started", threads=self.settings.worker_threads)

    def stop(self) -> None:
        """Stop the threads; unfinished jobs are picked up again at the next start."""
        if self.worker is not None:
            self.worker.stop(timeout=5000)
            self.worker = None
        self.broker.close()
        log.info("embedded worker stopped")
