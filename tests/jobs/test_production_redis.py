"""Production mode on PostgreSQL and Redis: one job per ``Idempotency-Key`` under concurrency, and two
schedulers that do not double the work.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from production_support import (
    Stack,
    count_events,
    db_rows,
    production_env,
    submit_many,
    via_proxy,
    wait_until,
)

from support import MATH_ANSWERS, json_lines

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

CONCURRENT = 10
UNSENT = 80


def test_same_idempotency_key_from_concurrent_requests_creates_one_job(stack: Stack) -> None:
    database = stack.postgres()
    redis = stack.redis()
    ai = stack.fake_ai()
    env = production_env(database, ai.base_url, REDIS_URL=redis.url)
    stack.prepare(env)
    worker = stack.worker(env, wait=False)
    server = stack.web(env)
    worker.wait_booted()
    body = {"exam_code": "MATH-101", "student_id": "s-idem", "answers": MATH_ANSWERS}
    url = f"{server.base_url}/api/exam-results/process"

    job_ids: list[str] = []
    for round_ in range(3):
        key = f"idem-{round_}"
        barrier = threading.Barrier(CONCURRENT)

        def post(_: int, key: str = key, barrier: threading.Barrier = barrier) -> httpx.Response:
            with httpx.Client(timeout=30) as client:
                client.get(f"{server.base_url}/health")  # connected before the race starts
                barrier.wait()
                return client.post(url, json=body, headers={"Idempotency-Key": key})

        with ThreadPoolExecutor(CONCURRENT) as pool:
            responses = list(pool.map(post, range(CONCURRENT)))

        assert [r.status_code for r in responses] == [202] * CONCURRENT, [r.text for r in responses]
        ids = {r.json()["job_id"] for r in responses}
        assert len(ids) == 1, ids
        rows = db_rows(database, "SELECT job_id FROM exam_processing_jobs WHERE idempotency_key = $1", key)
        assert [str(row["job_id"]) for row in rows] == list(ids)
        job_ids += ids

    for job_id in job_ids:
        final, _ = server.wait_final(job_id, timeout=30)
        assert final["status"] == "completed", final
        assert final["attempts"] == 1
    assert db_rows(database, "SELECT count(*) AS n FROM exam_processing_jobs") == [{"n": 3}]
    records = stack.worker_records()
    assert count_events(records, "exam processing completed") == dict.fromkeys(job_ids, 1)
    assert ai.requests() == 3


def test_two_schedulers_send_each_unsent_job_exactly_once(stack: Stack) -> None:
    database = stack.postgres()
    redis = stack.redis()
    web_broker = stack.proxy(("127.0.0.1", redis.port))
    # The schedulers reach Redis slowly, so that a pass takes a while: two schedulers running
    # passes at the same time would both send the same jobs.
    far_broker = stack.proxy(("127.0.0.1", redis.port), latency=0.01)
    ai = stack.fake_ai()
    env = production_env(database, ai.base_url, REDIS_URL=via_proxy(redis.url, far_broker))
    stack.prepare(env)
    server = stack.web(production_env(database, ai.base_url, REDIS_URL=via_proxy(redis.url, web_broker)))

    # The web process cannot reach the broker: every job is stored, none is sent.
    web_broker.cut()
    job_ids = submit_many(server, UNSENT, concurrency=8)
    wait_until(
        lambda: len(count_events(json_lines(server.log()), "exam processing enqueue failed")) == len(job_ids),
        30,
        "the web process to give up sending every job",
    )
    unsent = "SELECT count(*) AS n FROM exam_processing_jobs WHERE status = 'pending' AND enqueued_at IS NULL"
    assert db_rows(database, unsent) == [{"n": len(job_ids)}]

    # Two schedulers start together (one by mistake); no worker runs, so every message stays put.
    schedulers = [stack.scheduler(env), stack.scheduler(env)]

    def resent() -> int:
        records = json_lines(*(s.log() for s in schedulers))
        return sum(int(r["count"]) for r in records if r.get("event") == "reconciler re-sent jobs")

    wait_until(lambda: resent() >= len(job_ids), 40, "the schedulers to send the jobs")
    wait_until(lambda: db_rows(database, unsent) == [{"n": 0}], 10, "every job marked as sent")
    time.sleep(1)  # a second scheduler racing the first would be sending now

    assert resent() == len(job_ids)
    messages = redis.client().hgetall("dramatiq:exams.msgs")
    sent_for = Counter(json.loads(raw)["args"][0] for raw in messages.values())
    assert sent_for == dict.fromkeys(job_ids, 1)
    leaders = [
        s
        for s in schedulers
        if any(r.get("event") == "scheduler leadership" and r.get("leading") for r in json_lines(s.log()))
    ]
    assert len(leaders) == 1, [s.log()[-2000:] for s in schedulers]
    (follower,) = [s for s in schedulers if s is not leaders[0]]
    assert not [r for r in json_lines(follower.log()) if r.get("event") == "reconciler re-sent jobs"]
    cleanups = [s for s in schedulers if any(r.get("event") == "cleanup finished" for r in json_lines(s.log()))]
    assert cleanups == leaders  # the daily cleanup is not doubled either
