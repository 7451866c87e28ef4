"""Protecting the AI provider end to end (SPEC "Protecting the AI provider", issue 11).

Against the fake AI in its own process, which records how many requests it holds at once and
when each arrived: two ``exams worker`` processes on Redis stay within ``AI_MAX_CONCURRENCY``
together, a ``429`` seen by one of them pauses both, and with every answer a 500 the circuit
opens, lets through at most one trial per ``AI_CIRCUIT_SECONDS`` and every job completes with the
rule-based fallback. The embedded worker (one process) is checked the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from production_support import FakeAI, Stack, production_env, submit_many

from core.settings import load_settings
from support import ExamsApp, base_env, sqlite_url

FAILURES = 3
CIRCUIT_SECONDS = 2.0


def _requests_log(ai: FakeAI) -> dict[str, Any]:
    return dict(httpx.get(f"http://127.0.0.1:{ai.port}/_fake/requests", timeout=5).json())


def _set_mode(ai: FakeAI, **body: Any) -> None:
    httpx.put(f"http://127.0.0.1:{ai.port}/_fake/mode", json=body, timeout=5).raise_for_status()


def _assert_fallback(document: dict[str, Any]) -> None:
    assert document["status"] == "completed", document
    result = document["result"]
    assert result["recommendations_source"] == "rule_based_fallback", result
    assert result["recommendations"], result
    assert "AI tutor was unavailable" in result["recommendations_note"]


def _assert_breaker_held(arrivals: list[float], concurrency: int) -> None:
    """The circuit opened after FAILURES failed calls (plus those already sent with them); every
    later call is a trial, at least CIRCUIT_SECONDS after the one before."""
    first_burst = FAILURES + concurrency - 1
    assert len(arrivals) >= FAILURES, arrivals
    trials = arrivals[first_burst:]
    previous = arrivals[min(first_burst, len(arrivals)) - 1]
    for at in trials:
        assert at - previous >= CIRCUIT_SECONDS - 0.1, (arrivals, "two calls within one open period")
        previous = at


# --- Two worker processes on Redis ------------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.redis
def test_two_worker_processes_share_the_concurrency_cap(stack: Stack) -> None:
    database = stack.postgres()
    redis = stack.redis()
    ai = stack.fake_ai(latency=0.3)
    env = production_env(database, ai.base_url, REDIS_URL=redis.url, AI_MAX_CONCURRENCY="3")
    stack.prepare(env)
    worker = stack.worker(env, processes=2, threads=8, wait=False)
    server = stack.web(env)
    worker.wait_booted()

    job_ids = submit_many(server, 30, concurrency=8)
    for job_id in job_ids:
        final, _ = server.wait_final(job_id, timeout=90)
        assert final["status"] == "completed", final
        assert final["result"]["recommendations_source"] == "ai"
    seen = _requests_log(ai)
    assert seen["max_in_flight"] == 3, seen["max_in_flight"]  # reached, never passed
    assert len(seen["requests"]) == 30


@pytest.mark.postgres
@pytest.mark.redis
def test_a_429_seen_by_one_process_pauses_both(stack: Stack) -> None:
    database = stack.postgres()
    redis = stack.redis()
    ai = stack.fake_ai(latency=0.2)
    env = production_env(database, ai.base_url, REDIS_URL=redis.url, AI_MAX_CONCURRENCY="4", JOB_MAX_RETRIES="3")
    stack.prepare(env)
    worker = stack.worker(env, processes=2, threads=4, wait=False)
    server = stack.web(env)
    worker.wait_booted()
    _set_mode(ai, mode="rate_limit_429", times=1, retry_after=5)

    job_ids = submit_many(server, 12, concurrency=6)
    for job_id in job_ids:
        final, _ = server.wait_final(job_id, timeout=60)
        assert final["status"] == "completed", final
    requests = _requests_log(ai)["requests"]
    (refused,) = [r["at"] for r in requests if r["mode"] == "rate_limit_429"]
    # Calls already on their way when the 429 came may still arrive; then nothing for 5 s.
    later = [r["at"] - refused for r in requests if r["at"] > refused + 0.3]
    assert later, requests
    assert min(later) >= 5.0 - 0.1, sorted(later)[:5]


@pytest.mark.postgres
@pytest.mark.redis
def test_an_open_circuit_sends_trials_only_and_every_job_completes_with_the_fallback(stack: Stack) -> None:
    database = stack.postgres()
    redis = stack.redis()
    ai = stack.fake_ai(latency=0.2)
    env = production_env(
        database,
        ai.base_url,
        REDIS_URL=redis.url,
        AI_MAX_CONCURRENCY="2",
        AI_CIRCUIT_FAILURES=str(FAILURES),
        AI_CIRCUIT_SECONDS=f"{CIRCUIT_SECONDS:g}",
        AI_FALLBACK="rule_based",  # the product's default; support.base_env sets `fail`
    )
    stack.prepare(env)
    worker = stack.worker(env, processes=2, threads=4, wait=False)
    server = stack.web(env)
    worker.wait_booted()
    _set_mode(ai, mode="error_500")

    job_ids = submit_many(server, 10, concurrency=4)
    for job_id in job_ids:
        final, _ = server.wait_final(job_id, timeout=60)
        _assert_fallback(final)
    _assert_breaker_held([r["at"] for r in _requests_log(ai)["requests"]], concurrency=2)
    metrics = httpx.get(f"{server.base_url}/metrics", timeout=10).text
    assert "exams_ai_circuit_open" in metrics


# --- The embedded worker (one process) ------------------------------------------------------------


def _embedded(tmp_path: Path, ai: FakeAI, **extra: str) -> ExamsApp:
    env = base_env(sqlite_url(tmp_path), ai.base_url, **extra)
    return ExamsApp(load_settings(env, env_file=tmp_path / "absent.env")).prepare().start()


def test_embedded_worker_keeps_the_concurrency_cap(stack: Stack, tmp_path: Path) -> None:
    ai = stack.fake_ai(latency=0.3)
    app = _embedded(tmp_path, ai, AI_MAX_CONCURRENCY="2", WORKER_THREADS="8")
    try:
        job_ids = [app.submitted() for _ in range(8)]
        for job_id in job_ids:
            final, _ = app.wait_final(job_id, timeout=60)
            assert final["status"] == "completed", final
        assert _requests_log(ai)["max_in_flight"] == 2
    finally:
        app.stop()


def test_embedded_open_circuit_completes_every_job_with_the_fallback(stack: Stack, tmp_path: Path) -> None:
    ai = stack.fake_ai(latency=0.1)
    _set_mode(ai, mode="error_500")
    app = _embedded(
        tmp_path,
        ai,
        AI_MAX_CONCURRENCY="1",
        AI_CIRCUIT_FAILURES=str(FAILURES),
        AI_CIRCUIT_SECONDS=f"{CIRCUIT_SECONDS:g}",
        AI_FALLBACK="rule_based",  # the product's default; support.base_env sets `fail`
    )
    try:
        job_ids = [app.submitted() for _ in range(6)]
        for job_id in job_ids:
            final, _ = app.wait_final(job_id, timeout=60)
            _assert_fallback(final)
        arabic = app.status(job_ids[0], lang="ar")
        assert arabic["result"]["recommendations_note"]  # stored in the job's language
        _assert_breaker_held([r["at"] for r in _requests_log(ai)["requests"]], concurrency=1)
        metrics = app.http.get("/metrics").text
        assert 'exams_ai_fallbacks_total{reason="circuit_open"}' in metrics
    finally:
        app.stop()
