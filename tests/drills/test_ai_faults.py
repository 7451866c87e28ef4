"""Drill: the AI hanging past ``AI_API_TIMEOUT``, then answering garbage.

Production mode, submissions arriving all along. First a few requests hang (each is cut off at
the timeout and retried), then for a while every answer is unusable (not JSON, or not the shape
asked for): each is retried too, and a job whose retries all met garbage is handled as
``AI_FALLBACK`` says (here the default, ``rule_based``: completed with the grade and rule-based
recommendations, and a note). No job fails, and an answer that was used is never asked for again.
"""

from __future__ import annotations

import time

import httpx
import pytest
from production_support import Stack, wait_until
from services import PrivateRedis, Traffic, check_outcome, postgres_rows, start_production

pytestmark = [pytest.mark.postgres, pytest.mark.redis]


def test_ai_hanging_then_answering_garbage(pg_url: str, private_redis: PrivateRedis, stack: Stack) -> None:
    product = start_production(
        stack,
        pg_url,
        REDIS_URL=private_redis.url,
        AI_API_TIMEOUT="3",
        JOB_MAX_RETRIES="1",
        AI_FALLBACK="rule_based",
    )
    ai = product.ai
    traffic = Traffic(product.web.base_url, interval=0.4).start()
    try:
        traffic.wait_accepted(8)
        ai.set_mode("hang", times=4)
        wait_until(lambda: ai.stats()["by_mode"].get("hang", 0) >= 4, 30, "four requests to hang")
        ai.set_mode("invalid_json")
        time.sleep(4)
        ai.set_mode("bad_shape")
        time.sleep(4)
        ai.set_mode("ok")
        back = time.monotonic()
        traffic.wait_accepted(5)
    finally:
        traffic.stop()

    def answers_used() -> int:
        return int(ai.stats()["by_mode"].get("ok", 0))

    outcome = check_outcome(
        postgres_rows(pg_url, traffic.prefix),
        traffic,
        back,
        ai_requests=answers_used,
        sources=("ai", "rule_based_fallback"),
        logs=product.logs,
    )
    outcome.report("AI hanging past AI_API_TIMEOUT, then answering garbage")
    by_mode = ai.stats()["by_mode"]
    assert by_mode["hang"] == 4
    assert by_mode["invalid_json"], by_mode
    assert by_mode["bad_shape"], by_mode
    assert max(outcome.attempts) == 2  # retried (JOB_MAX_RETRIES=1), then handled per AI_FALLBACK
    assert outcome.sources["rule_based_fallback"], "no job ran out of retries: the fallback was not drilled"
    # What the student sees of a fallback: the grade, rule-based recommendations and a note.
    with httpx.Client(base_url=product.web.base_url, timeout=10) as client:
        results = [client.get(f"/api/exam-results/status/{j}").json()["result"] for j in traffic.accepted.values()]
    fallbacks = [r for r in results if r["recommendations_source"] == "rule_based_fallback"]
    assert len(fallbacks) == outcome.sources["rule_based_fallback"]
    assert all(r["recommendations_note"] and r["recommendations"] for r in fallbacks), fallbacks[:2]
