"""The one place where ``QUEUE_CONNECTION`` picks the Dramatiq broker, and the job actor on it.

``embedded`` is Dramatiq's in-memory ``StubBroker`` worked by threads of the web process;
``redis`` and ``rabbitmq`` are the real brokers shared by any number of worker hosts. Actors
are ``async def`` under Dramatiq's ``AsyncIO`` middleware: a worker thread waits on its job's
coroutine while one event loop per process multiplexes every AI call in flight, so a process
keeps ``--threads`` jobs (AI calls included) in flight at once.
"""

from __future__ import annotations

import os

import dramatiq
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import AsyncIO, CurrentMessage

from core.settings import Settings

__all__ = ("JOB_ACTOR_NAME", "QUEUE_NAME", "create_broker")

QUEUE_NAME = "exams"
JOB_ACTOR_NAME = "process_exam"


def create_broker(settings: Settings, *, worker: bool = False) -> dramatiq.Broker:
    """Create the broker for ``settings``, make it Dramatiq's global one, and declare the actor.

    ``worker``: this process consumes jobs (``exams worker``, or the embedded web process), so
    it also reports its heartbeat and, with ``PROMETHEUS_MULTIPROC_DIR``, Dramatiq's own metrics.
    """
    broker: dramatiq.Broker
    if settings.queue_connection == "redis":
        from dramatiq.brokers.redis import RedisBroker

        # A dead worker's unacked messages come back after heartbeat_timeout (the reconciler
        # catches anything slower through the job's own heartbeat).
        broker = RedisBroker(  # type: ignore[no-untyped-call]
            url=settings.redis_url, heartbeat_timeout=30_000, dead_message_ttl=7 * 86_400_000
        )
    elif settings.queue_connection == "rabbitmq":
        from dramatiq.brokers.rabbitmq import RabbitmqBroker

        broker = RabbitmqBroker(url=settings.rabbitmq_url, confirm_delivery=True)
    else:
        broker = StubBroker()
    broker.add_middleware(AsyncIO())
    broker.add_middleware(CurrentMessage())
    if worker or settings.queue_connection == "embedded":
        from jobs.heartbeat import WorkerHeartbeats

        broker.add_middleware(WorkerHeartbeats(settings))
    if worker and settings.queue_connection != "embedded" and os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # Dramatiq's own metrics into the shared directory, so the web app's /metrics shows them;
        # its exporter also serves them on dramatiq_prom_port (9191) for workers on other hosts.
        os.environ.setdefault("dramatiq_prom_db", os.environ["PROMETHEUS_MULTIPROC_DIR"])
        from dramatiq.middleware.prometheus import Prometheus

        broker.add_middleware(Prometheus())
    dramatiq.set_broker(broker)

    from jobs.actors import declare_actors

    declare_actors(broker, settings)
    return broker
