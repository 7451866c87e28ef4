"""Production mode under faults: broker down, database down, a worker killed, a job over its time limit.

Each test runs the real processes (``exams serve`` with ``QUEUE_CONNECTION=redis``, ``exams
worker``, ``exams scheduler``, ``exams fake-ai``) against PostgreSQL and a private Redis; outages
are made with a :class:`~production_support.TcpProxy` cut between the product and the service.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from typing import Any

import httpx
import pytest
from production_support import (
    Stack,
    count_events,
    db_rows,
    pg_address,
    production_env,
    via_proxy,
    wait_until,
)

from support import json_lines

pytestmark = [pytest.mark.postgres, pytest.mark.redis]


def _job(database_url: str, job_id: str) -> dict[str, Any]:
    rows = db_rows(database_url, "SELECT * FROM exam_processing_jobs WHERE job_id = $1::uuid", job_id)
    assert len(rows) == 1, rows
    return rows[0]


def _wait_step(database_url: str, job_id: str, step: str, timeout: float = 30) -> None:
    wait_until(lambda: _job(database_url, job_id)["current_step"] == step, timeout, f"job {job_id} in {step}")


def _wait_final(database_url: str, job_id: str, timeout: float) -> dict[str, Any]:
    def final() -> dict[str, Any] | None:
        job = _job(database_url, job_id)
        return job if job["status"] in ("completed", "failed") else None

    return wait_until(final, timeout, f"job {job_id} to finish", interval=0.3)


def test_broker_down_at_submit_job_is_sent_once_the_broker_is_back(stack: Stack) -> None:
    database = stack.postgres()
    redis = stack.redis()
    broker = stack.proxy(("127.0.0.1", redis.port))
    ai = stack.fake_ai()
    env = production_env(database, ai.base_url, REDIS_URL=via_proxy(redis.url, broker))
    stack.prepare(env)
    worker = stack.worker(env, wait=False)
    server = stack.web(env)
    scheduler = stack.scheduler(env)
    worker.wait_booted()

    broker.cut()
    response = server.submit()
    ready = httpx.get(f"{server.base_url}/ready", timeout=10)

    assert response.status_code == 202, response.text
    job_id = response.json()["job_id"]
    assert ready.status_code == 503
    assert ready.headers["content-type"].startswith("application/problem+json")
    assert ready.json()["checks"] == {"database": "ok", "broker": "down"}
    assert "broker" in ready.json()["detail"].lower()
    # The row is stored, and the failed send is on record (no enqueued_at) for the reconciler.
    wait_until(
        lambda: job_id in count_events(json_lines(server.log()), "exam processing enqueue failed"),
        30,
        "the web process to give up sending",
    )
    stored = _job(database, job_id)
    assert (stored["status"], stored["enqueued_at"]) == ("pending", None)

    broker.restore()
    final = _wait_final(database, job_id, timeout=45)

    assert final["status"] == "completed", final
    assert final["attempts"] == 1
    assert httpx.get(f"{server.base_url}/ready", timeout=10).status_code == 200
    resent = [r for r in json_lines(scheduler.log()) if r.get("event") == "reconciler re-sent jobs"]
    assert sum(int(r["count"]) for r in resent) == 1, resent
    assert count_events(stack.worker_records(), "exam processing completed") == {job_id: 1}


def test_database_down_submit_is_503_and_a_worker_cut_off_mid_job_finishes(stack: Stack) -> None:
    direct = stack.postgres()
    database = stack.proxy(pg_address(direct))
    proxied = via_proxy(direct, database)
    redis = stack.redis()
    ai = stack.fake_ai()
    env = production_env(proxied, ai.base_url, REDIS_URL=redis.url, AI_API_TIMEOUT="10")
    stack.prepare(env)
    worker = stack.worker(env, wait=False)
    server = stack.web(env)
    stack.scheduler(env)
    worker.wait_booted()
    body = {"exam_code": "MATH-101", "student_id": "s-pg-down", "answers": {"q1": "b"}}
    key = {"Idempotency-Key": "pg-down-1"}
    assert httpx.get(f"{server.base_url}/api/exams/MATH-101", timeout=10).status_code == 200  # caches warm

    # The database is away when a submission arrives: 503 problem, nothing stored.
    database.cut()
    refused = httpx.post(f"{server.base_url}/api/exam-results/process", json=body, headers=key, timeout=30)
    ready = httpx.get(f"{server.base_url}/ready", timeout=10)
    database.restore()

    assert refused.status_code == 503, refused.text
    assert refused.headers["content-type"].startswith("application/problem+json")
    problem = refused.json()
    assert problem["status"] == 503
    assert problem["type"]
    assert problem["title"]
    assert problem["detail"]
    assert ready.status_code == 503
    assert ready.json()["checks"] == {"database": "down", "broker": "ok"}
    query = "SELECT count(*) AS n FROM exam_processing_jobs WHERE student_id = $1"
    assert db_rows(direct, "SELECT count(*) AS n FROM exam_processing_jobs") == [{"n": 0}]
    # The key was not burnt: sent again once the database is back, it creates the job.
    accepted = httpx.post(f"{server.base_url}/api/exam-results/process", json=body, headers=key, timeout=30)
    assert accepted.status_code == 202, accepted.text
    first_job = accepted.json()["job_id"]

    # The database blinks while a worker waits for the AI (its progress writes fail), and is back
    # before the answer arrives.
    assert _wait_final(direct, first_job, timeout=30)["status"] == "completed"
    ai.set_timing(latency=5.0)
    response = server.submit()
    assert response.status_code == 202, response.text
    job_id = response.json()["job_id"]
    _wait_step(direct, job_id, "getting_ai_recommendations")
    database.cut()
    time.sleep(2.5)
    database.restore()
    ai.set_timing(latency=0.2)
    final = _wait_final(direct, job_id, timeout=60)

    assert final["status"] == "completed", final
    assert final["result"] is not None
    # The blip hit while the AI was thinking: the worker rode it out and kept the answer, so
    # the attempt was not lost (and the AI not paid twice).
    assert final["attempts"] == 1
    completed = count_events(stack.worker_records(), "exam processing completed")
    assert completed[job_id] == 1
    assert completed[first_job] == 1
    assert db_rows(direct, query, "s-pg-down") == [{"n": 1}]


def test_worker_process_killed_mid_job_job_runs_again_and_completes_once(stack: Stack) -> None:
    database = stack.postgres()
    redis = stack.redis()
    ai = stack.fake_ai(latency=3.0)
    env = production_env(database, ai.base_url, REDIS_URL=redis.url, AI_API_TIMEOUT="10")
    stack.prepare(env)
    first = stack.worker(env, wait=False)
    server = stack.web(env)
    stack.scheduler(env)
    first.wait_booted()
    response = server.submit()
    assert response.status_code == 202, response.text
    job_id = response.json()["job_id"]
    _wait_step(database, job_id, "getting_ai_recommendations")
    wait_until(lambda: ai.requests() == 1, 10, "the AI request to be under way")

    (child,) = first.worker_pids()
    os.kill(child, signal.SIGKILL)  # the OOM killer's way
    assert first.proc is not None
    with contextlib.suppress(subprocess.TimeoutExpired):
        first.proc.wait(30)  # Dramatiq's master stops when one of its worker processes dies
    first.kill_group()  # (and if it did not, it goes now, as a host crash would take it)
    ai.set_timing(latency=0.2)
    stack.worker(env)
    final = _wait_final(database, job_id, timeout=60)

    assert final["status"] == "completed", final
    assert final["attempts"] == 2
    records = stack.worker_records()
    assert count_events(records, "exam processing completed") == {job_id: 1}
    starts = [r for r in records if r.get("event") == "exam processing started"]
    assert [(r["job_id"], r["attempt"]) for r in starts] == [(job_id, 1), (job_id, 2)]
    assert starts[1]["step"] == "getting_ai_recommendations"  # resumed there: the grading is kept
    assert ai.requests() == 2  # the first attempt's call was cut off by the kill
    assert server.status(job_id)["attempts"] == 2


def test_attempt_over_the_time_limit_is_stopped_retried_then_failed(stack: Stack) -> None:
    database = stack.postgres()
    redis = stack.redis()
    ai = stack.fake_ai()
    env = production_env(
        database,
        ai.base_url,
        REDIS_URL=redis.url,
        JOB_TIME_LIMIT="3",
        AI_API_TIMEOUT="60",
        JOB_MAX_RETRIES="1",
    )
    stack.prepare(env)
    worker = stack.worker(env, wait=False)
    server = stack.web(env)
    worker.wait_booted()
    ai.set_mode("hang")

    response = server.submit()
    assert response.status_code == 202, response.text
    job_id = response.json()["job_id"]
    final, _ = server.wait_final(job_id, timeout=90)

    assert final["status"] == "failed", final
    assert final["attempts"] == 2  # JOB_MAX_RETRIES + 1
    assert "time limit" in final["error_message"], final["error_message"]
    records = stack.worker_records()
    retries = [r for r in records if r.get("event") == "exam processing retry scheduled"]
    assert len(retries) == 1
    assert all("time limit" in r["error"] for r in retries)
    # The worker logs the failure just after writing it: the line may land a moment after the poll.
    failures = wait_until(
        lambda: count_events(stack.worker_records(), "exam processing failed") or None, 15, "the failure's log line"
    )
    assert failures == {job_id: 1}
    assert ai.requests() == 2
