"""Drill: RabbitMQ, the broker, restarted (``rabbitmqctl stop``, then started on the same data).

Production mode with ``QUEUE_CONNECTION=rabbitmq`` on a RabbitMQ node of the drill's own (the
machine's node is shared). Dramatiq's queues are durable and its messages persistent, so what
was queued survives the restart; messages a worker held unacknowledged go back to the queue when
its connection drops. Submissions while the broker is away are stored and sent later.
"""

from __future__ import annotations

import time

import httpx
import pytest
from production_support import Stack
from services import PrivateRabbitMQ, Traffic, start_production

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq]


def test_rabbitmq_broker_restarted(pg_url: str, private_rabbitmq: PrivateRabbitMQ, stack: Stack) -> None:
    product = start_production(stack, pg_url, QUEUE_CONNECTION="rabbitmq", RABBITMQ_URL=private_rabbitmq.url)
    traffic = Traffic(product.web.base_url).start()
    try:
        traffic.wait_accepted(12)  # jobs in flight at every step when the broker goes
        private_rabbitmq.stop()
        ready = httpx.get(f"{product.web.base_url}/ready", timeout=10)
        traffic.wait_accepted(3)  # accepted while the broker is down: stored, sent later
        private_rabbitmq.start()  # as long as the node takes to boot
        back = time.monotonic()
        traffic.wait_accepted(5)
    finally:
        traffic.stop()
    outcome = product.outcome(pg_url, traffic, back)
    outcome.report("RabbitMQ (broker) stopped and started again")
    assert ready.status_code == 503
    assert ready.json()["checks"]["broker"] == "down"
    assert outcome.refused == 0  # the database was there: every submission was stored
