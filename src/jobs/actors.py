"""The Dramatiq actor that runs one exam job, and sending it a job.

The actor stays thin: it binds the job to the log context, calls the pipeline, and turns the
pipeline's :class:`~jobs.pipeline.RetryLater` into Dramatiq's ``Retry`` with its delay.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any
from uuid import UUID

import dramatiq
import structlog
from dramatiq.middleware import CurrentMessage, TimeLimitExceeded
from sqlalchemy.exc import DBAPIError, OperationalError

from core.settings import Settings
from jobs.broker import JOB_ACTOR_NAME, QUEUE_NAME
from jobs.pipeline import PipelineRuntime, RetryLater, run_job

__all__ = ("declare_actors", "send_job", "set_runtime_factory")

log = structlog.get_logger("jobs.actors")

_runtime: PipelineRuntime | None = None
_runtime_lock = threading.Lock()
_runtime_loop: asyncio.AbstractEventLoop | None = None
_factory: Any = None


def set_runtime_factory(factory: Any) -> None:
    """Set the callable that builds this process's :class:`PipelineRuntime` (on the worker's loop)."""
    global _factory, _runtime
    _factory = factory
    _runtime = None


def _get_runtime() -> PipelineRuntime:
    global _runtime, _runtime_loop
    loop = asyncio.get_running_loop()
    with _runtime_lock:
        if _runtime is None or _runtime_loop is not loop:
            if _factory is None:
                from jobs.runtime import build_runtime

                set_runtime_factory(build_runtime)
            _runtime = _factory()
            _runtime_loop = loop
        return _runtime


def _retry_when(retries: int, exc: BaseException) -> bool:
    # Retries are decided by the pipeline from the job's own ``attempts`` (it survives
    # redelivery and reconciler re-sends). An attempt cut off by Dramatiq's hard time limit
    # is retried too; the next claim counts it and gives up when attempts run out.
    if isinstance(exc, dramatiq.Retry):
        return True
    return isinstance(exc, TimeLimitExceeded) and retries < 20


#: Redeliveries while the database is unreachable before the message is dropped (the job's row,
#: once the database is back, is found by the reconciler anyway).
DATABASE_RETRIES = 40


async def process_exam(job_id: str) -> None:
    """Run or resume one exam job."""
    structlog.contextvars.clear_contextvars()
    try:
        await run_job(_get_runtime(), UUID(job_id))
    except RetryLater as exc:
        raise dramatiq.Retry(str(exc), delay=int(exc.delay * 1000)) from None
    except (OperationalError, DBAPIError, OSError) as exc:
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
        raise dramatiq.Retry("database unavailable", delay=min(2000 * 2**retries, 60_000)) from None
    finally:
        structlog.contextvars.clear_contextvars()


def declare_actors(broker: dramatiq.Broker, settings: Settings) -> None:
    """Declare the job actor on ``broker``."""
    dramatiq.actor(
        actor_name=JOB_ACTOR_NAME,
        queue_name=QUEUE_NAME,
        broker=broker,
        max_retries=10_000,
        retry_when=_retry_when,
        # A backstop above the pipeline's own per-attempt limit (which records a clear error).
        time_limit=int((settings.job_time_limit + 60) * 1000),
    )(process_exam)


def send_job(broker: dramatiq.Broker, job_id: UUID) -> None:
    """Enqueue a message for ``job_id`` (blocking; call from a thread in async code)."""
    broker.get_actor(JOB_ACTOR_NAME).send(str(job_id))
