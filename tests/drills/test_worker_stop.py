"""Drill: a worker stopped with SIGTERM during a rolling deploy, jobs in flight at every step.

What ``supervisorctl stop exams-worker:*`` does (SIGTERM to Dramatiq's master, which forwards one
to each worker process), while a new worker is already running. The AI's concurrency is capped,
so that when the signal comes some jobs are calling the AI and more are waiting for a slot. The
stopping worker lets the AI calls under way finish (their answers are paid for) and hands every
other job back at once: released without counting the attempt and sent to the queue again, where
the new worker takes it within seconds, not after the broker's heartbeat timeout or the job's
stale-heartbeat period. The signal comes only once the drill's unfinished jobs are at every step
(both workers reach PostgreSQL through a proxy with a little latency, so that the steps that are
only database work last long enough to be caught).
"""

from __future__ import annotations

import signal
import time
from datetime import datetime

import pytest
from production_support import Stack, count_events, db_rows, wait_until
from services import (
    PrivateRedis,
    Traffic,
    postgres_rows,
    start_production,
    wait_for_every_step,
)

from support import json_lines

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

#: Less than the other drills' proxy latency: every job holds a worker thread while it waits for
#: an AI slot, so each round trip added keeps threads busy longer, and the new worker must have
#: threads free for the jobs handed back to it.
DB_LATENCY = 0.03
AI_STEP = "getting_ai_recommendations"


def _at(record: dict[str, object]) -> datetime:
    return datetime.fromisoformat(str(record["timestamp"]).replace("Z", "+00:00"))


def test_worker_sigterm_during_a_rolling_deploy(pg_url: str, private_redis: PrivateRedis, stack: Stack) -> None:
    product = start_production(
        stack,
        pg_url,
        threads=16,
        worker_db_latency=DB_LATENCY,
        REDIS_URL=private_redis.url,
        AI_MAX_CONCURRENCY="4",
    )
    old = product.worker
    # More submissions a second than four AI slots serve (1.5-2.5 s each: about 2 a second), after
    # a burst that fills them, so that jobs are always waiting for a slot (to be handed back); at
    # random gaps, since arrivals on the dot never have jobs queued, validating and grading at once.
    traffic = Traffic(product.web.base_url, interval=0.4, random_gaps=True)
    waiting = "SELECT count(*) AS n FROM exam_processing_jobs WHERE current_step = 'getting_ai_recommendations'"
    try:
        traffic.burst(12)
        traffic.start()
        # Four AI calls under way, more jobs waiting for a slot, others coming in.
        wait_until(lambda: db_rows(pg_url, waiting)[0]["n"] >= 10, 60, "jobs waiting for the AI")
        new = stack.worker(product.worker_env, threads=16)  # the deploy's new worker is up first
        assert old.proc is not None
        # More jobs at the AI step than the 4 slots: some wait for a slot, to be handed back.
        caught = wait_for_every_step(postgres_rows(pg_url, traffic.prefix), timeout=45, at_least={AI_STEP: 8})
        stopped = time.monotonic()
        old.proc.send_signal(signal.SIGTERM)  # supervisor's stop: the master only (stopasgroup=false)
        old.proc.wait(60)
        stop_seconds = time.monotonic() - stopped
        back = time.monotonic()
        traffic.wait_accepted(5)
    finally:
        traffic.stop()
    outcome = product.outcome(pg_url, traffic, back)
    outcome.report("worker SIGTERM during a rolling deploy", caught)
    print(f"[drill] the stopping worker exited {stop_seconds:.1f} s after SIGTERM")
    assert outcome.attempts == {1: outcome.accepted}  # a hand-back is not an attempt

    old_records, new_records = json_lines(old.log()), json_lines(new.log())
    handed_back = [r for r in old_records if r.get("event") == "exam processing handed back"]
    assert handed_back, "no job was waiting when the worker stopped: nothing was drilled"
    finished_by_old = count_events(old_records, "exam processing completed")
    assert finished_by_old, "no AI call was under way when the worker stopped: nothing was drilled"
    # Every job handed back was started again by the new worker from the message sent at once,
    # never re-sent as stalled by the scheduler (the heartbeat-timeout path), and within seconds:
    # as soon as one of the new worker's threads was free, not after JOB_STALE_AFTER.
    started = {r["job_id"]: r for r in new_records if r.get("event") == "exam processing started"}
    stalled = {r.get("job_id") for r in json_lines(product.scheduler.log()) if "stalled" in str(r.get("event"))}
    for record in handed_back:
        resumed = started[record["job_id"]]
        assert record["job_id"] not in stalled, record
        assert (_at(resumed) - _at(record)).total_seconds() < 15, (record, resumed)
    # Stopped within the AI calls under way (plus start-up and teardown), not a shutdown timeout.
    assert stop_seconds < 20, stop_seconds
