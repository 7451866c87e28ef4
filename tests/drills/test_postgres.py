"""Drill: PostgreSQL restarted (fast shutdown, 20 s down), then killed (immediate mode, 10 s down).

Production mode (web, one worker process with 32 threads, scheduler, Redis broker) on a PostgreSQL
server of the drill's own, submissions arriving all along. The restart comes as in the incident
that asked for these drills: the AI answering in 3 to 5 s and a burst of 30 submissions on top;
the crash comes with the usual load. Each fault hits only once the drill's unfinished jobs are at
every step (the worker reaches the database through
a proxy with a little latency, so that the steps that are only database work last long enough to
be caught; the proxy outlives the restarts). While the database is away a submission is refused
with ``503`` and nothing is stored; jobs caught mid-way wait for the database and carry on (no
attempt lost, no AI answer asked twice); every job is finished within a minute of the database
being back.
"""

from __future__ import annotations

import time
from collections import Counter

import pytest
from production_support import Stack, wait_until
from services import (
    AI_JITTER,
    AI_LATENCY,
    WORKER_DB_LATENCY,
    PrivatePostgres,
    PrivateRedis,
    Traffic,
    check_outcome,
    describe_steps,
    postgres_rows,
    start_production,
    wait_for_every_step,
    wait_recovered,
)

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

#: Submissions sent at once before each fault, on top of the steady ones (the incident had 30 in flight).
BURST = 30


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
    product = start_production(stack, database, worker_db_latency=WORKER_DB_LATENCY, REDIS_URL=private_redis.url)
    product.ai.set_timing(latency=3.0, jitter=2.0)
    traffic = Traffic(product.web.base_url)
    rows = postgres_rows(database, traffic.prefix)
    caught: dict[str, Counter[str]] = {}
    try:
        traffic.burst(BURST)
        traffic.start()
        caught["fast"] = wait_for_every_step(rows)
        back = _outage(private_postgres, traffic, "fast", down=20.0)
        wait_recovered(rows, set(traffic.accepted), back)
        first_recovery = time.monotonic() - back
        # The crash with the usual load (the steady submissions, the AI in 1.5 to 2.5 s): a job
        # queued when the database goes waits for its message's retry back-off, so every
        # queued job adds seconds to the recovery, and the drill's time.
        product.ai.set_timing(latency=AI_LATENCY, jitter=AI_JITTER)
        caught["immediate"] = wait_for_every_step(rows)
        back = _outage(private_postgres, traffic, "immediate", down=10.0)
        traffic.wait_accepted(5)
    finally:
        traffic.stop()
    outcome = check_outcome(rows, traffic, back, ai_requests=product.ai.requests, logs=product.logs)
    print(
        f"[drill] PostgreSQL fast shutdown, 20 s down: jobs final {first_recovery:.1f} s after it was back; "
        f"in flight when the fault hit: {describe_steps(caught['fast'])}"
    )
    outcome.report("PostgreSQL immediate shutdown (crash), 10 s down", caught["immediate"])
    assert outcome.refused > 0
