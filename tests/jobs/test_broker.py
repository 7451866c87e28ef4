"""The broker the product builds: pools and worker threads that hold hundreds of jobs in flight."""

from __future__ import annotations

import dramatiq
import redis
from dramatiq.asyncio import get_event_loop_thread

from core.settings import load_settings
from jobs.broker import INTERRUPT_CHECK_SECONDS, create_broker
from support import NO_ENV_FILE, REDIS_URL


def test_the_redis_broker_waits_for_a_pooled_connection() -> None:
    settings = load_settings({"QUEUE_CONNECTION": "redis", "REDIS_URL": REDIS_URL}, env_file=NO_ENV_FILE)
    broker = create_broker(settings)
    try:
        assert isinstance(broker.client.connection_pool, redis.BlockingConnectionPool)  # type: ignore[attr-defined]
    finally:
        broker.close()


def test_waiting_worker_threads_wake_once_a_second() -> None:
    """Dramatiq's 0.1 s would wake a 500-thread worker 5,000 times a second (bench/inflight.py)."""
    broker = create_broker(load_settings({}, env_file=NO_ENV_FILE))

    @dramatiq.actor(broker=broker)
    async def noop() -> None:
        return None

    worker = dramatiq.Worker(broker, worker_threads=1)
    worker.start()
    try:
        thread = get_event_loop_thread()
        assert thread is not None
        assert thread.interrupt_check_ival == INTERRUPT_CHECK_SECONDS == 1.0
        noop.send()
        broker.join(noop.queue_name, timeout=10_000)  # type: ignore[attr-defined]
    finally:
        worker.stop()
