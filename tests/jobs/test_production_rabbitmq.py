"""Production mode on PostgreSQL and RabbitMQ (``QUEUE_CONNECTION=rabbitmq``), end to end.

Each run gets its own RabbitMQ virtual host (created with ``rabbitmqctl``, deleted afterwards), so
it never sees another run's ``exams`` queue.
"""

from __future__ import annotations

import httpx
import pytest
from production_support import Stack, count_events, production_env, rabbitmq_vhost

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq]


def test_rabbitmq_submit_to_completed_and_ready(stack: Stack) -> None:
    database = stack.postgres()
    amqp_url = stack.enter(rabbitmq_vhost())
    ai = stack.fake_ai()
    env = production_env(database, ai.base_url, QUEUE_CONNECTION="rabbitmq", RABBITMQ_URL=amqp_url)
    stack.prepare(env)
    worker = stack.worker(env, processes=1, threads=4, wait=False)
    server = stack.web(env)
    worker.wait_booted()

    ready = httpx.get(f"{server.base_url}/ready", timeout=10)
    responses = [server.submit() for _ in range(3)]

    assert ready.status_code == 200, ready.text
    assert ready.json() == {"status": "ready", "checks": {"database": "ok", "broker": "ok"}}
    assert [r.status_code for r in responses] == [202] * 3
    job_ids = [r.json()["job_id"] for r in responses]
    for job_id in job_ids:
        final, seen = server.wait_final(job_id, timeout=30)
        assert final["status"] == "completed", final
        assert final["attempts"] == 1
        assert final["result"]["recommendations_source"] == "ai"
        progress = [doc["progress"] for doc in seen]
        assert progress == sorted(progress)
    assert count_events(stack.worker_records(), "exam processing completed") == dict.fromkeys(job_ids, 1)
    assert ai.requests() == 3
