"""Drill: PostgreSQL restarted (fast shutdown, 20 s down), then killed (immediate mode, 10 s down).

Production mode (web, one worker process with 32 threads, scheduler, Redis broker) on a PostgreSQL
server of the drill's own, with submissions arriving all along. While the database is away a
submission is refused with ``503`` and nothing is stored; jobs caught mid-way wait for the
database and carry on (no attempt lost, no AI answer asked twice); every job is finished within
a minute of the database being back.
"""

from __future__ import annotations

import time

import pytest
from production_support import Stack, wait_until
from services import (
    PrivatePostgres,
    PrivateRedis,
    Traffic,
    check_outcome,
    postgres_rows,
    start_production,
    wait_recovered,
)

pytestmark = [pytest.mark.postgres, pytest.mark.redis]


def _outage(server: PrivatePostgres, traffic: Traffic, mode: str, down: float) -> float:
    """Stop PostgreSQL (``mode``) for ``down`` seconds with submissions arriving; when it is back."""
    refused = len(traffic.refused)
    server.stop(mode)
    stopped = time.monotonic()
    wait_until(lambda: len(traffic.refused) > refused + 2, down, "submissions refused while the database is down")
    time.sleep(max(stopped + down - time.monotonic(), 0.0))
    server.start()
    return time.monotonic()


def test_postgres_fast_restart_then_immediate_kill(
    private_postgres: PrivatePostgres, private_redis: PrivateRedis, stack: Stack
) -> None:
    database = private_postgres.database()
    product = start_production(stack, database, REDIS_URL=private_redis.url)
    traffic = Traffic(product.web.base_url).start()
    rows = postgres_rows(database, traffic.prefix)
    try:
        traffic.wait_accepted(12)  # jobs in flight at every step when the database goes
        back = _outage(private_postgres, traffic, "fast", down=20.0)
        caught = set(traffic.accepted)
        wait_recovered(rows, caught, back)
        first_recovery = time.monotonic() - back
        back = _outage(private_postgres, traffic, "immediate", down=10.0)
        traffic.wait_accepted(5)
    finally:
        traffic.stop()
    outcome = check_outcome(rows, traffic, back, ai_requests=product.ai.requests, logs=product.logs)
    print(f"[drill] PostgreSQL fast shutdown, 20 s down: jobs final {first_recovery:.1f} s after it was back")
    outcome.report("PostgreSQL immediate shutdown (crash), 10 s down")
    assert outcome.refused > 0
