"""The Dramatiq actor that runs one exam job, and sending it a job.

The actor stays thin: it binds the job to the log context, calls the pipeline, and turns the
pipeline's :class:`~jobs.pipeline.RetryLater` into Dramatiq's ``Retry`` with its delay. What it
runs jobs with (database, AI client) comes from the runtime factory the composition root hands
to :func:`declare_actors`; it is called once per event loop, on the loop that runs the jobs.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from uuid import UUID

import dramatiq
import structlog
from dramatiq.middleware import CurrentMessage, TimeLimitExceeded

from core.retry import TRANSIENT_DATABASE_ERRORS, backoff_seconds
from core.settings import Settings
from jobs.broker import JOB_ACTOR_NAME, QUEUE_NAME
from jobs.pipeline import PipelineRuntime, RetryLater, run_job

__all__ = ("DATABASE_RETRIES", "JobActor", "declare_actors", "send_job")

log = structlog.get_logger("jobs.actors")

#: Redeliveries while the database is unreachable before the message is dropped (the job's row,
#: once the database is back, is found by the reconciler anyway).
DATABASE_RETRIES = 40


def _retry_when(retries: int, exc: BaseException) -> bool:
    # Retries are decided by the pipeline from the job's own ``attempts`` (it survives
    # redelivery and reconciler re-sends). An attempt cut off by Dramatiq's hard time limit
    # is retried too; the next claim counts it and gives up when attempts run out.
    if isinstance(exc, dramatiq.Retry):
        return True
    return isinstance(exc, TimeLimitExceeded) and retries < 20


class JobActor:
    """Runs jobs with a :class:`PipelineRuntime` built on the worker's event loop."""

    def __init__(self, runtime_factory: Callable[[], PipelineRuntime] | None) -> None:
        self._factory = runtime_factory
        self._runtime: PipelineRuntime | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()

    def runtime(self) -> PipelineRuntime:
        """This loop's runtime (built at first use)."""
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._runtime is None or self._loop is not loop:
                if self._factory is None:
                    msg = "this process only sends jobs; it has no runtime to run them"
                    raise RuntimeError(msg)
                self._runtime = self._factory()
                self._loop = loop
            return self._runtime

    async def process_exam(self, job_id: str) -> None:
        """Run or resume one exam job."""
        structlog.contextvars.clear_contextvars()
        try:
            await run_job(self.runtime(), UUID(job_id))
        except RetryLater as exc:
            raise dramatiq.Retry(str(exc), delay=int(exc.delay * 1000)) from None
        except TRANSIENT_DATABASE_ERRORS as exc:
            # The database is away before the job could even be claimed or released.
            message = CurrentMessage.get_current_message()
            retries = int(message.options.get("retries", 0)) if message is not None else 0
            # exam_code, step and attempt are in the database, which cannot be read right now.
            log.warning(
                "exam processing waiting for the database",
                job_id=job_id,
                exam_code=None,
                step=None,
                attempt=None,
                error=type(exc).__name__,
            )
            if retries >= DATABASE_RETRIES:
                raise
            delay = backoff_seconds(retries + 1, base=2.0, cap=60.0, jitter=False)
            raise dramatiq.Retry("database unavailable", delay=int(delay * 1000)) from None
        finally:
            structlog.contextvars.clear_contextvars()


def declare_actors(
    broker: dramatiq.Broker, settings: Settings, runtime_factory: Callable[[], PipelineRuntime] | None = None
) -> JobActor:
    """Declare the job actor on ``broker``; without ``runtime_factory`` the process can only send."""
    holder = JobActor(runtime_factory)
    dramatiq.actor(
        actor_name=JOB_ACTOR_NAME,
        queue_name=QUEUE_NAME,
        broker=broker,
        max_retries=10_000,
        retry_when=_retry_when,
        # A backstop above the pipeline's own per-attempt limit (which records a clear error).
        time_limit=int((settings.job_time_limit + 60) * 1000),
    )(holder.process_exam)
    return holder


def send_job(broker: dramatiq.Broker, job_id: UUID) -> None:
    """Enqueue a message for ``job_id`` (blocking; call from a thread in async code)."""
    broker.get_actor(JOB_ACTOR_NAME).send(str(job_id))
