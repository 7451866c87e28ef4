"""Drill: Redis, the broker, restarted (killed, 20 s down, started again empty).

Production mode with ``QUEUE_CONNECTION=redis`` (the broker, and the AI guard's shared state) on
a Redis of the drill's own, without persistence: like a real one without AOF, it comes back
empty, every queued message and delayed retry gone. While it is away submissions are still
accepted (the database is the outbox) and running jobs wait for the AI guard; once it is back the
reconciler notices the lost messages and sends every waiting job again. Redis is killed only
once the drill's unfinished jobs are at every step (the worker reaches PostgreSQL through a proxy
with a little latency, so that the steps that are only database work last long enough to be caught).
"""

from __future__ import annotations

import time

import httpx
import pytest
from production_support import Stack
from services import (
    WORKER_DB_LATENCY,
    PrivateRedis,
    Traffic,
    postgres_rows,
    start_production,
    wait_for_every_step,
)

from support import json_lines

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

LOST = "broker lost its messages: sending every waiting job again"


def test_redis_broker_restarted_empty(pg_url: str, private_redis: PrivateRedis, stack: Stack) -> None:
    product = start_production(stack, pg_url, worker_db_latency=WORKER_DB_LATENCY, REDIS_URL=private_redis.url)
    traffic = Traffic(product.web.base_url).start()
    try:
        caught = wait_for_every_step(postgres_rows(pg_url, traffic.prefix))
        private_redis.kill()
        killed = time.monotonic()
        ready = httpx.get(f"{product.web.base_url}/ready", timeout=10)
        traffic.wait_accepted(5)  # accepted while the broker is down: stored, sent later
        time.sleep(max(killed + 20.0 - time.monotonic(), 0.0))
        private_redis.start()
        back = time.monotonic()
        traffic.wait_accepted(5)
    finally:
        traffic.stop()
    outcome = product.outcome(pg_url, traffic, back)
    outcome.report("Redis (broker) killed, 20 s down, back empty", caught)
    assert ready.status_code == 503
    assert ready.json()["checks"]["broker"] == "down"
    assert outcome.refused == 0  # the database was there: every submission was stored
    # The reconciler saw Redis come back empty (its first look, at start-up, found no marker either).
    lost = [r for r in json_lines(product.scheduler.log()) if r.get("event") == LOST]
    assert len(lost) >= 2, lost
