"""500 submissions on two worker processes, with a slow, jittery AI that fails 10 % of its answers.

Every job must end ``completed`` or, after its retries, ``failed``; none may be left behind, none
may complete twice, and ``attempts`` must match what the workers and the AI saw.
"""

from __future__ import annotations

import time
from collections import Counter

import pytest
from production_support import Stack, count_events, db_rows, production_env, submit_many, wait_until

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

SUBMISSIONS = 500
MAX_RETRIES = 3


def test_500_submissions_on_two_workers_each_end_exactly_once(stack: Stack) -> None:
    database = stack.postgres()
    redis = stack.redis()
    ai = stack.fake_ai(latency=0.2, jitter=0.8, error_rate=0.1)
    env = production_env(
        database,
        ai.base_url,
        REDIS_URL=redis.url,
        JOB_MAX_RETRIES=str(MAX_RETRIES),
        JOB_RETRY_BACKOFF="0.1",
        AI_API_TIMEOUT="10",
    )
    stack.prepare(env)
    worker = stack.worker(env, processes=2, threads=8, wait=False)
    server = stack.web(env)
    stack.scheduler(env)
    worker.wait_booted()

    started = time.monotonic()
    job_ids = submit_many(server, SUBMISSIONS, concurrency=16)
    submitted = time.monotonic() - started
    unfinished = "SELECT count(*) AS n FROM exam_processing_jobs WHERE status IN ('pending', 'processing')"
    wait_until(lambda: db_rows(database, unfinished) == [{"n": 0}], 240, "every job to finish", interval=1)
    finished = time.monotonic() - started

    assert len(set(job_ids)) == SUBMISSIONS
    rows = db_rows(
        database,
        "SELECT job_id::text AS job_id, status, attempts, progress, current_step, result, error_message"
        " FROM exam_processing_jobs",
    )
    assert sorted(row["job_id"] for row in rows) == sorted(job_ids)
    records = stack.worker_records()
    completed_lines = count_events(records, "exam processing completed")
    failed_lines = count_events(records, "exam processing failed")
    started_lines = count_events(records, "exam processing started")
    statuses = Counter(row["status"] for row in rows)
    assert set(statuses) <= {"completed", "failed"}, statuses
    for row in rows:
        job_id = row["job_id"]
        assert started_lines[job_id] == row["attempts"], row  # attempts tells the truth
        if row["status"] == "completed":
            assert (row["progress"], row["current_step"]) == (100, "completed")
            assert row["result"] is not None
            assert 1 <= row["attempts"] <= MAX_RETRIES + 1
            assert (completed_lines[job_id], failed_lines[job_id]) == (1, 0), row
        else:
            assert row["attempts"] == MAX_RETRIES + 1, row
            assert "HTTP 500" in row["error_message"], row
            assert (completed_lines[job_id], failed_lines[job_id]) == (0, 1), row
    # Each attempt asked the AI exactly once; the failed answers are the retried or failed attempts.
    attempts = sum(int(row["attempts"]) for row in rows)
    stats = ai.stats()
    assert stats["requests"] == attempts
    assert stats["by_mode"].get("error_500", 0) == attempts - statuses["completed"]
    print(  # the figures, for the record (pytest -s)
        f"\n{SUBMISSIONS} jobs: {dict(statuses)}, {attempts} attempts, {stats['by_mode']} AI answers,"
        f" submitted in {submitted:.1f} s, all finished after {finished:.1f} s"
    )
