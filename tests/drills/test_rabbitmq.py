"""Drill: RabbitMQ, the broker, restarted (``rabbitmqctl stop``, then started on the same data).

Production mode with ``QUEUE_CONNECTION=rabbitmq`` on a RabbitMQ node of the drill's own (the
machine's node is shared). Dramatiq's queues are durable and its messages persistent, so what
was queued survives the restart; messages a worker held unacknowledged go back to the queue when
its connection drops. Submissions while the broker is away are stored and sent later. The node
is stopped only once the drill's unfinished jobs are at every step (the worker reaches PostgreSQL
through a proxy with a little latency, so that the steps that are only database work last long
enough to be caught).
"""

from __future__ import annotations

import time

import httpx
import pytest
from production_support import Stack
from services import (
    WORKER_DB_LATENCY,
    PrivateRabbitMQ,
    Traffic,
    postgres_rows,
    start_production,
    wait_for_every_step,
)

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq]

#: Half the other drills' proxy latency: without Redis the AI guard keeps its state in PostgreSQL,
#: one short transaction per decision on a single locked row, so its decisions queue behind each
#: other's round trips (at 40 ms a chunk the worker then finishes fewer jobs a second than arrive).
DB_LATENCY = WORKER_DB_LATENCY / 2


def test_rabbitmq_broker_restarted(pg_url: str, private_rabbitmq: PrivateRabbitMQ, stack: Stack) -> None:
    product = start_production(
        stack,
        pg_url,
        worker_db_latency=DB_LATENCY,
        QUEUE_CONNECTION="rabbitmq",
        RABBITMQ_URL=private_rabbitmq.url,
    )
    traffic = Traffic(product.web.base_url).start()
    try:
        caught = wait_for_every_step(postgres_rows(pg_url, traffic.prefix))
        private_rabbitmq.stop()  # raises unless rabbitmqctl stop stopped it (a kill is no restart)
        ready = httpx.get(f"{product.web.base_url}/ready", timeout=10)
        traffic.wait_accepted(3)  # accepted while the broker is down: stored, sent later
        private_rabbitmq.start()  # as long as the node takes to boot
        back = time.monotonic()
        traffic.wait_accepted(5)
    finally:
        traffic.stop()
    outcome = product.outcome(pg_url, traffic, back)
    outcome.report("RabbitMQ (broker) stopped and started again", caught)
    assert ready.status_code == 503
    assert ready.json()["checks"]["broker"] == "down"
    assert outcome.refused == 0  # the database was there: every submission was stored
