"""AI and database faults during a job: retries, resumption, final failures, redelivery.

Through real ``exams serve`` processes talking to the real fake-AI process, and in process
(``run_job`` on a real SQLite database) where a fault must land at an exact point.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import pytest
from pipeline_support import load, submit

import jobs.pipeline
from ai_client import AIClient
from core.settings import Settings
from exams.catalog import parse_catalog
from exams.services import ExamService
from jobs.pipeline import PipelineRuntime, RetryLater, run_job
from jobs.progress import step_index
from outage_errors import through_sqlalchemy_adapter
from support import SAMPLE_CATALOG, ExamsServer, FakeAIProcess, base_env, json_lines, sqlite_url

# --- helpers --------------------------------------------------------------------------------


def submit_and_wait(server: ExamsServer, timeout: float = 60.0) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    response = server.submit()
    assert response.status_code == 202, response.text
    final, seen = server.wait_final(response.json()["job_id"], timeout=timeout)
    assert_never_backwards(seen)
    return final, seen


def assert_never_backwards(seen: list[dict[str, Any]]) -> None:
    progress = [doc["progress"] for doc in seen]
    assert progress == sorted(progress), progress
    steps = [step_index(doc["current_step"]) for doc in seen]
    assert steps == sorted(steps), [doc["current_step"] for doc in seen]


def log_events(server: ExamsServer, event: str, job_id: str | None = None) -> list[dict[str, Any]]:
    """The server's JSON log lines with this ``event`` (and ``job_id``)."""
    return [
        r for r in json_lines(server.log()) if r.get("event") == event and (job_id is None or r.get("job_id") == job_id)
    ]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, fake_ai_process: FakeAIProcess) -> Iterator[ExamsServer]:
    """One server for the module (a start costs seconds): JOB_MAX_RETRIES=2, AI_API_TIMEOUT=5."""
    tmp = tmp_path_factory.mktemp("faults")
    env = base_env(sqlite_url(tmp), fake_ai_process.base_url, AI_API_TIMEOUT="5")
    proc = ExamsServer(env, tmp / "server.log").prepare().start()
    yield proc
    proc.stop()


# --- through a real server ------------------------------------------------------------------


def test_progress_keeps_moving_during_a_slow_ai_call(server: ExamsServer, fake_ai_http: FakeAIProcess) -> None:
    fake_ai_http.set_mode("ok", latency=4)
    final, seen = submit_and_wait(server)
    assert final["status"] == "completed", final
    while_waiting = {
        d["progress"] for d in seen if d["current_step"] == "getting_ai_recommendations" and 20 <= d["progress"] < 90
    }
    assert len(while_waiting) >= 3, sorted(while_waiting)


def test_an_ai_that_hangs_is_cut_off_at_the_timeout_and_retried(
    server: ExamsServer, fake_ai_http: FakeAIProcess
) -> None:
    fake_ai_http.set_mode("hang", times=1)
    final, _ = submit_and_wait(server)
    assert final["status"] == "completed", final
    assert final["attempts"] == 2
    assert fake_ai_http.requests() == 2
    retries = log_events(server, "exam processing retry scheduled", final["job_id"])
    assert len(retries) == 1, retries
    assert "timeout" in retries[0]["error"].lower()


def test_two_ai_errors_then_success_completes_on_the_third_attempt(
    server: ExamsServer, fake_ai_http: FakeAIProcess
) -> None:
    fake_ai_http.set_mode("error_500", times=2)
    final, seen = submit_and_wait(server)
    assert final["status"] == "completed", final
    assert final["attempts"] == 3
    assert final["error_message"] is None
    assert final["result"]["recommendations_source"] == "ai"
    assert fake_ai_http.requests() == 3
    # while retries waited, the job stayed processing at the AI step
    waiting = [d for d in seen if d["status"] != "completed" and d["attempts"] >= 1]
    assert all(d["status"] == "processing" for d in waiting), {d["status"] for d in waiting}
    assert all(d["current_step"] != "failed" for d in seen)


def test_ai_always_failing_fails_the_job_after_the_retries(server: ExamsServer, fake_ai_http: FakeAIProcess) -> None:
    fake_ai_http.set_mode("error_500")
    final, seen = submit_and_wait(server)
    assert final["status"] == "failed", final
    assert final["current_step"] == "failed"
    assert final["attempts"] == 3  # 1 + JOB_MAX_RETRIES
    assert "500" in final["error_message"]
    assert "attempts" in final["error_message"]
    assert 20 <= final["progress"] < 90  # kept where the AI step left it, not reset
    assert final["progress"] == max(doc["progress"] for doc in seen)
    assert final["result"] is None
    assert fake_ai_http.requests() == 3
    assert "failed" not in [d["current_step"] for d in seen[:-1]]  # failed only as the final state


def test_rate_limit_is_retried_after_retry_after(server: ExamsServer, fake_ai_http: FakeAIProcess) -> None:
    fake_ai_http.set_mode("rate_limit_429", times=1)
    final, _ = submit_and_wait(server)
    assert final["status"] == "completed", final
    assert final["attempts"] == 2
    assert fake_ai_http.requests() == 2
    retries = log_events(server, "exam processing retry scheduled", final["job_id"])
    assert len(retries) == 1, retries
    assert retries[0]["retry_in_seconds"] >= 1.0  # the fake AI's Retry-After: 1
    assert "429" in retries[0]["error"]


@pytest.mark.parametrize("mode", ["invalid_json", "bad_shape"])
def test_an_unusable_ai_answer_is_asked_again_then_fails(
    server: ExamsServer, fake_ai_http: FakeAIProcess, mode: str
) -> None:
    # Garbage from a model is often not repeated: retried like an outage, then (AI_FALLBACK=fail) failed.
    fake_ai_http.set_mode(mode)
    final, _ = submit_and_wait(server)
    assert final["status"] == "failed", final
    assert final["attempts"] == 3  # 1 + JOB_MAX_RETRIES
    assert fake_ai_http.requests() == 3
    assert final["error_code"] == "ai_invalid_answer"
    assert "AI" in final["error_message"]
    assert 20 <= final["progress"] < 90
    # The code is stored, the message rendered in each request's language.
    arabic = server._request("GET", f"/api/exam-results/status/{final['job_id']}", headers={"Accept-Language": "ar"})
    assert arabic.json()["error_code"] == "ai_invalid_answer"
    # "Stopped after 3 attempts: AI answer unusable: …" (the provider's own detail stays as it came)
    assert arabic.json()["error_message"].startswith(
        "توقفت المحاولات بعد 3 محاولات: تعذّر استخدام إجابة الذكاء الاصطناعي"
    )


# --- in process: run_job on a real SQLite database --------------------------------------------


def _sqlite_path(settings: Settings) -> str:
    return settings.database_url.split(":///", 1)[1]


async def test_transient_ai_failure_keeps_the_job_processing_at_the_ai_step(
    runtime: PipelineRuntime, fake_ai_http: FakeAIProcess
) -> None:
    fake_ai_http.set_mode("rate_limit_429", times=1)
    job_id = await submit(runtime)
    with pytest.raises(RetryLater) as caught:
        await run_job(runtime, job_id)
    assert caught.value.delay >= 1.0  # Retry-After: 1
    job = await load(runtime, job_id)
    assert (job.status, job.current_step, job.attempts) == ("processing", "getting_ai_recommendations", 1)
    assert job.progress >= 20
    assert job.grading is not None
    assert job.recommendations is None
    assert "429" in (job.error_message or "")
    assert job.heartbeat_at is None  # released: the retry may claim it at once
    grading = job.grading

    await run_job(runtime, job_id)
    job = await load(runtime, job_id)
    assert (job.status, job.progress, job.attempts) == ("completed", 100, 2)
    assert job.grading == grading
    assert job.result is not None
    assert job.result["score"] == grading["score"]
    assert job.error_message is None
    assert fake_ai_http.requests() == 2


async def test_a_failure_after_the_ai_answered_does_not_ask_the_ai_again(
    runtime: PipelineRuntime, fake_ai_http: FakeAIProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A transient database refusal at the very last write (PostgreSQL's deadlock detector, as
    # SQLAlchemy's asyncpg adapter raises it): the attempt is given up and retried later.
    finalize = jobs.pipeline._STEPS["finalizing_results"]
    refusals = [through_sqlalchemy_adapter(asyncpg.exceptions.DeadlockDetectedError("deadlock detected"))]

    async def finalize_refused_once(run: Any) -> None:
        if refusals:
            raise refusals.pop()
        await finalize(run)

    monkeypatch.setitem(jobs.pipeline._STEPS, "finalizing_results", finalize_refused_once)
    job_id = await submit(runtime)
    with pytest.raises(RetryLater):
        await run_job(runtime, job_id)
    job = await load(runtime, job_id)
    assert (job.status, job.current_step, job.attempts) == ("processing", "finalizing_results", 1)
    assert job.recommendations is not None
    assert job.recommendations["source"] == "ai"
    assert "database error" in (job.error_message or "")
    assert fake_ai_http.requests() == 1

    await run_job(runtime, job_id)
    job = await load(runtime, job_id)
    assert (job.status, job.attempts) == ("completed", 2)
    assert job.result is not None
    assert job.result["recommendations"] == job.recommendations["items"]
    assert fake_ai_http.requests() == 1  # the answer received before the fault was kept


async def test_ai_failures_exhaust_the_retries(runtime: PipelineRuntime, fake_ai_http: FakeAIProcess) -> None:
    fake_ai_http.set_mode("error_500")
    job_id = await submit(runtime)
    for _ in range(2):
        with pytest.raises(RetryLater):
            await run_job(runtime, job_id)
    await run_job(runtime, job_id)  # the third attempt (1 + JOB_MAX_RETRIES) fails for good
    job = await load(runtime, job_id)
    assert (job.status, job.current_step, job.failed_step, job.attempts) == (
        "failed",
        "failed",
        "getting_ai_recommendations",
        3,
    )
    assert "500" in (job.error_message or "")
    assert job.progress >= 20
    assert fake_ai_http.requests() == 3


async def test_an_ai_that_always_hangs_fails_the_job_with_a_timeout(
    runtime: PipelineRuntime, fake_ai_http: FakeAIProcess
) -> None:
    settings = runtime.settings.with_overrides(ai_api_timeout=1.0)
    async with AIClient(base_url=fake_ai_http.base_url, api_key="test-key", model="test", timeout=1.0) as ai:
        quick = PipelineRuntime(settings=settings, database=runtime.database, ai=ai)
        fake_ai_http.set_mode("hang")
        job_id = await submit(quick)
        for _ in range(2):
            with pytest.raises(RetryLater):
                await run_job(quick, job_id)
        await run_job(quick, job_id)
    job = await load(runtime, job_id)
    assert (job.status, job.attempts, job.failed_step) == ("failed", 3, "getting_ai_recommendations")
    assert "timeout" in (job.error_message or "").lower()
    assert "3 attempts" in (job.error_message or "")
    assert fake_ai_http.requests() == 3


async def test_running_a_finished_job_again_does_nothing(runtime: PipelineRuntime, fake_ai_http: FakeAIProcess) -> None:
    job_id = await submit(runtime)
    await run_job(runtime, job_id)
    done = await load(runtime, job_id)
    assert done.status == "completed"
    await run_job(runtime, job_id)  # a redelivered message
    again = await load(runtime, job_id)
    assert (again.status, again.attempts, again.version, again.updated_at) == (
        "completed",
        1,
        done.version,
        done.updated_at,
    )
    assert fake_ai_http.requests() == 1


async def test_two_deliveries_at_once_run_the_job_once(runtime: PipelineRuntime, fake_ai_http: FakeAIProcess) -> None:
    job_id = await submit(runtime)
    await asyncio.gather(run_job(runtime, job_id), run_job(runtime, job_id))
    job = await load(runtime, job_id)
    assert (job.status, job.attempts) == ("completed", 1)
    assert fake_ai_http.requests() == 1


async def test_a_closed_exam_fails_at_validation_without_calling_the_ai(
    runtime: PipelineRuntime, fake_ai_http: FakeAIProcess
) -> None:
    job_id = await submit(runtime)
    catalog = json.loads(SAMPLE_CATALOG.read_text())
    exams = catalog if isinstance(catalog, list) else [catalog]
    math = next(e for e in exams if e["code"] == "MATH-101")
    async with runtime.database.transaction() as session:
        await ExamService(session=session).load(parse_catalog(json.dumps({**math, "status": "closed"})))
    await run_job(runtime, job_id)
    job = await load(runtime, job_id)
    assert (job.status, job.failed_step, job.attempts) == ("failed", "validating_exam", 1)
    assert job.grading is None
    assert fake_ai_http.requests() == 0
