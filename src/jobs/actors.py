"""The Dramatiq actors: one runs an exam job, the other delivers a completion callback.

The actor stays thin: it binds the job to the log context, calls the pipeline, and turns the
pipeline's :class:`~jobs.pipeline.RetryLater` into Dramatiq's ``Retry`` with its delay. What it
runs jobs with (database, AI client) comes from the runtime factory the composition root hands
to :func:`declare_actors`; it is called once per event loop, on the loop that runs the jobs.
The callback actor makes one attempt per message (``jobs.callbacks.attempt_delivery``) and asks
Dramatiq for the next one with the delay the delivery's back-off gives.

A worker being stopped (SIGTERM: a deploy, ``supervisorctl stop``) tells the actor through
:class:`CloseRuntime`; jobs not yet calling the AI are then handed back (the pipeline's
:class:`~jobs.pipeline.HandedBack`) and sent to the queue again at once, for another worker.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Callable
from uuid import UUID

import dramatiq
import structlog
from dramatiq.asyncio import get_event_loop_thread
from dramatiq.middleware import CurrentMessage, Middleware, TimeLimitExceeded

from core.retry import backoff_seconds, is_transient
from core.settings import Settings
from jobs.broker import CALLBACK_ACTOR_NAME, CALLBACK_QUEUE_NAME, JOB_ACTOR_NAME, QUEUE_NAME
from jobs.callbacks import FIRST_RETRY_SECONDS, attempt_delivery
from jobs.pipeline import HandedBack, PipelineRuntime, RetryLater, run_job

__all__ = ("DATABASE_RETRIES", "CloseRuntime", "JobActor", "declare_actors", "send_callback", "send_job")

log = structlog.get_logger("jobs.actors")

#: Redeliveries while the database is unreachable before the message is dropped (the job's row,
#: once the database is back, is found by the reconciler anyway): about an hour at the cap below.
DATABASE_RETRIES = 360
#: Longest wait between two tries of a job whose database is unreachable: a job resumes at most
#: this long after the database is back.
DATABASE_RETRY_CAP_SECONDS = 10.0


def _retry_when(retries: int, exc: BaseException) -> bool:
    # Retries are decided by the pipeline from the job's own ``attempts`` (it survives
    # redelivery and reconciler re-sends). An attempt cut off by Dramatiq's hard time limit
    # is retried too; the next claim counts it and gives up when attempts run out.
    if isinstance(exc, dramatiq.Retry):
        return True
    return isinstance(exc, TimeLimitExceeded) and retries < 20


class JobActor:
    """Runs jobs with a :class:`PipelineRuntime` built on the worker's event loop."""

    def __init__(
        self,
        runtime_factory: Callable[[], PipelineRuntime] | None,
        broker: dramatiq.Broker | None = None,
        callback_first_retry: float = FIRST_RETRY_SECONDS,
    ) -> None:
        self._factory = runtime_factory
        self._broker = broker
        #: Seconds before a failed callback's first retry (tests shorten it).
        self.callback_first_retry = callback_first_retry
        self._runtime: PipelineRuntime | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()
        #: Set when the worker begins to shut down (see :class:`CloseRuntime`).
        self.stopping = threading.Event()

    def runtime(self) -> PipelineRuntime:
        """This loop's runtime (built at first use)."""
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._runtime is None or self._loop is not loop:
                if self._factory is None:
                    msg = "this process only sends jobs; it has no runtime to run them"
                    raise RuntimeError(msg)
                self._runtime = self._factory()
                self._runtime.stopping = self.stopping.is_set
                if self._broker is not None:
                    self._runtime.send_callback = functools.partial(send_callback, self._broker)
                self._loop = loop
            return self._runtime

    async def close(self) -> None:
        """Close what the runtime holds (database pool, AI client); a later job builds it again."""
        with self._lock:
            runtime, self._runtime, self._loop = self._runtime, None, None
        if runtime is None:
            return
        if runtime.ai is not None:
            await runtime.ai.aclose()
        if runtime.guard is not None:
            await runtime.guard.aclose()
        await runtime.database.dispose()

    async def process_exam(self, job_id: str) -> None:
        """Run or resume one exam job."""
        structlog.contextvars.clear_contextvars()
        try:
            await run_job(self.runtime(), UUID(job_id))
        except RetryLater as exc:
            raise dramatiq.Retry(str(exc), delay=int(exc.delay * 1000)) from None
        except HandedBack:
            await self._send_again(job_id)
        except Exception as exc:
            if not is_transient(exc):
                raise
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
            delay = backoff_seconds(retries + 1, base=1.0, cap=DATABASE_RETRY_CAP_SECONDS)
            raise dramatiq.Retry("database unavailable", delay=int(delay * 1000)) from None
        finally:
            structlog.contextvars.clear_contextvars()

    async def _send_again(self, job_id: str) -> None:
        """A job handed back by a stopping worker: a new message on the queue, for another worker
        now (rather than after the broker's heartbeat timeout)."""
        if self._broker is None:
            raise dramatiq.Retry("handed back", delay=0)
        try:
            await asyncio.to_thread(send_job, self._broker, UUID(job_id))
        except Exception as exc:  # noqa: BLE001  (any broker failure: Dramatiq's retry re-sends it)
            log.warning("exam processing hand-back not sent", job_id=job_id, error=f"{type(exc).__name__}: {exc}")
            raise dramatiq.Retry("handed back", delay=0) from None

    async def deliver_callback(self, delivery_id: str) -> None:
        """One attempt at a completion callback; ``Retry`` with the back-off while it fails."""
        structlog.contextvars.clear_contextvars()
        runtime = self.runtime()
        try:
            delay = await attempt_delivery(
                runtime.database, runtime.settings, UUID(delivery_id), first_retry=self.callback_first_retry
            )
        except Exception as exc:
            if not is_transient(exc):
                raise
            # The attempt could not be claimed or recorded: its row stays due for the scheduler.
            log.warning("exam callback waiting for the database", delivery_id=delivery_id, error=type(exc).__name__)
            raise dramatiq.Retry("database unavailable", delay=30_000) from None
        finally:
            structlog.contextvars.clear_contextvars()
        if delay is not None:
            raise dramatiq.Retry(f"callback retry in {delay:g} s", delay=int(delay * 1000))


class CloseRuntime(Middleware):
    """Tells the actor when its worker starts to stop, and closes the actor's runtime on the
    worker's event loop once the worker threads have stopped.

    Add it after Dramatiq's ``AsyncIO`` middleware: "after" hooks run in reverse order, so this one
    runs before AsyncIO's ``after_worker_shutdown`` stops that loop.
    """

    def __init__(self, actor: JobActor) -> None:
        self.actor = actor

    def after_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        """A (re)started worker takes jobs again."""
        self.actor.stopping.clear()

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        """From now on, jobs that have not started their AI request are handed back."""
        self.actor.stopping.set()
        log.info("worker stopping: jobs not yet calling the AI are handed back")

    def after_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        """Dispose the database pool and close the AI client of this worker."""
        thread = get_event_loop_thread()
        if thread is not None:
            try:
                thread.run_coroutine(self.actor.close())
            except Exception as exc:  # noqa: BLE001  (shutting down: log and go on)
                log.warning("worker runtime not closed cleanly", error=f"{type(exc).__name__}: {exc}"[:300])


def _callback_retry_when(retries: int, exc: BaseException) -> bool:
    # Each Retry is one the delivery asked for; when to give up is the delivery's decision.
    return isinstance(exc, dramatiq.Retry) and retries < 10_000


def declare_actors(
    broker: dramatiq.Broker, settings: Settings, runtime_factory: Callable[[], PipelineRuntime] | None = None
) -> JobActor:
    """Declare the job and callback actors on ``broker``; without ``runtime_factory`` the process
    can only send."""
    holder = JobActor(runtime_factory, broker)
    dramatiq.actor(
        actor_name=JOB_ACTOR_NAME,
        queue_name=QUEUE_NAME,
        broker=broker,
        max_retries=10_000,
        retry_when=_retry_when,
        # A backstop above the pipeline's own per-attempt limit (which records a clear error).
        time_limit=int((settings.job_time_limit + 60) * 1000),
    )(holder.process_exam)
    dramatiq.actor(
        actor_name=CALLBACK_ACTOR_NAME,
        queue_name=CALLBACK_QUEUE_NAME,
        broker=broker,
        max_retries=10_000,
        retry_when=_callback_retry_when,
        time_limit=60_000,
    )(holder.deliver_callback)
    return holder


def send_job(broker: dramatiq.Broker, job_id: UUID) -> None:
    """Enqueue a message for ``job_id`` (blocking; call from a thread in async code)."""
    broker.get_actor(JOB_ACTOR_NAME).send(str(job_id))


def send_callback(broker: dramatiq.Broker, delivery_id: UUID) -> None:
    """Enqueue an attempt at a callback delivery (blocking; call from a thread in async code)."""
    broker.get_actor(CALLBACK_ACTOR_NAME).send(str(delivery_id))
