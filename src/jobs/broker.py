"""The one place where ``QUEUE_CONNECTION`` picks the Dramatiq broker.

``embedded`` is Dramatiq's in-memory ``StubBroker`` worked by threads of the web process;
``redis`` and ``rabbitmq`` are the real brokers shared by any number of worker hosts. Actors
are ``async def`` under Dramatiq's ``AsyncIO`` middleware: a worker thread waits on its job's
coroutine while one event loop per process multiplexes every AI call in flight, so a process
keeps ``--threads`` jobs (AI calls included) in flight at once.
"""

from __future__ import annotations

from collections.abc import Iterable

import dramatiq
from dramatiq.asyncio import EventLoopThread, set_event_loop_thread
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import AsyncIO, CurrentMessage, Middleware

from core.settings import Settings

__all__ = (
    "CALLBACK_ACTOR_NAME",
    "CALLBACK_QUEUE_NAME",
    "JOB_ACTOR_NAME",
    "QUEUE_NAME",
    "broker_lost_messages",
    "create_broker",
)

QUEUE_NAME = "exams"
JOB_ACTOR_NAME = "process_exam"
#: Completion callbacks have their own queue: a slow receiver never holds up the jobs' queue.
CALLBACK_QUEUE_NAME = "exams_callbacks"
CALLBACK_ACTOR_NAME = "deliver_callback"
#: A key the reconciler keeps in Redis next to Dramatiq's queues: a Redis without it has lost
#: every message it held (restarted without persistence, flushed, failed over to an empty replica).
MARKER_KEY = "exams.broker-marker"
#: Seconds between a waiting worker thread's looks for Dramatiq's interrupts (see :class:`QuietAsyncIO`).
INTERRUPT_CHECK_SECONDS = 1.0


class QuietAsyncIO(AsyncIO):
    """Dramatiq's ``AsyncIO`` middleware, its worker threads waking once a second instead of ten times.

    Each worker thread waits for its job's coroutine on the event loop and wakes at an interval
    to see whether Dramatiq interrupted it (time limit, shutdown). At Dramatiq's 0.1 s, a worker
    with 500 threads wakes 5,000 times a second, and each wake-up takes the GIL from the event
    loop that runs every job: ``bench/inflight.py`` showed the loop waiting for the GIL after
    each socket write. A second is still well inside what an interrupt needs (the pipeline's own
    ``JOB_TIME_LIMIT`` is an ``asyncio.timeout`` on the loop).
    """

    def before_worker_boot(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        """Start the event loop thread (as Dramatiq does) with the longer interval."""
        thread = EventLoopThread(self.logger, interrupt_check_ival=INTERRUPT_CHECK_SECONDS)
        thread.start(timeout=1.0)
        set_event_loop_thread(thread)


def create_broker(settings: Settings, middleware: Iterable[Middleware] = ()) -> dramatiq.Broker:
    """Create the broker for ``settings`` with the product's middleware (and ``middleware``).

    It is also made Dramatiq's global broker, which Dramatiq's worker command looks up.
    """
    broker: dramatiq.Broker
    if settings.queue_connection == "redis":
        from dramatiq.brokers.redis import RedisBroker

        from core.redis_clients import sync_client

        # A dead worker's unacked messages come back after heartbeat_timeout (the reconciler
        # catches anything slower through the job's own heartbeat).
        broker = RedisBroker(  # type: ignore[no-untyped-call]
            client=sync_client(settings.redis_url), heartbeat_timeout=30_000, dead_message_ttl=7 * 86_400_000
        )
    elif settings.queue_connection == "rabbitmq":
        from dramatiq.brokers.rabbitmq import RabbitmqBroker

        broker = RabbitmqBroker(url=settings.rabbitmq_url, confirm_delivery=True)
    else:
        broker = StubBroker()
    broker.add_middleware(QuietAsyncIO())
    broker.add_middleware(CurrentMessage())
    for extra in middleware:
        broker.add_middleware(extra)
    dramatiq.set_broker(broker)
    return broker


def broker_lost_messages(broker: dramatiq.Broker) -> bool:
    """Whether the broker lost its messages since the last look (blocking; the reconciler asks).

    Redis: the marker key is gone (and is set again). Dramatiq's Redis broker keeps its queues,
    delayed retries and unacknowledged messages only in Redis, so a Redis restarted without
    persistence comes back empty; the reconciler then sends every waiting job again at once
    instead of after ``PENDING_RESEND_AFTER``. The first look ever also answers ``True`` (a
    duplicate message is harmless: the claim skips it). RabbitMQ keeps durable queues and
    persistent messages across restarts: ``False``, as when Redis cannot be asked right now.
    """
    from dramatiq.brokers.redis import RedisBroker

    if not isinstance(broker, RedisBroker):
        return False
    try:
        created = broker.client.set(f"{broker.namespace}:{MARKER_KEY}", "1", nx=True)
    except Exception:  # noqa: BLE001  (Redis away: asked again at the next pass)
        return False
    return bool(created)
