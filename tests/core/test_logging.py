"""Structured logs of a real ``exams serve`` process: JSON lines, job fields, request ids, no secrets."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from support import MATH_ANSWERS, ExamsServer, FakeAIProcess, base_env, sqlite_url

SECRET_ANSWER = "SECRET-ANSWER-123"
SECRET_NUMERIC_ANSWER = "SECRET-ANSWER-456"  # a wrong-typed answer, rejected with 422
SECRET_MALFORMED = "SECRET-ANSWER-789"  # inside a body that is not JSON (400)
AI_KEY = "sk-test-SECRET-KEY-xyz"
ADMIN_PASSWORD = "pw-SECRET-789"
SECRETS = (SECRET_ANSWER, SECRET_NUMERIC_ANSWER, SECRET_MALFORMED, AI_KEY, "SECRET-KEY", ADMIN_PASSWORD)
JOB_FIELDS = ("job_id", "exam_code", "step", "attempt")


def parse_log(text: str) -> list[dict[str, Any]]:
    """Every line of the log as a JSON object (fails on the first line that is not one)."""
    records = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as exc:
            raise AssertionError(f"log line {number} is not JSON: {line[:300]}") from exc
        assert isinstance(record, dict), f"log line {number} is not an object: {line[:300]}"
        assert record.get("event"), f"log line {number} has no event: {line[:300]}"
        assert record.get("level"), f"log line {number} has no level: {line[:300]}"
        assert record.get("timestamp"), f"log line {number} has no timestamp: {line[:300]}"
        records.append(record)
    return records


def submit(server: ExamsServer, answers: dict[str, Any], **headers: str) -> httpx.Response:
    response = server.submit(answers, **headers)
    assert response.status_code == 202, response.text
    return response


@dataclass
class LoggedRun:
    """The log of one server that ran a completed and a failed job, and what the test sent."""

    text: str
    records: list[dict[str, Any]]
    completed_id: str
    failed_id: str
    generated_request_id: str


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, fake_ai_process: FakeAIProcess) -> LoggedRun:
    """Run a server with secrets in its settings and answers; stop it; parse its whole log."""
    tmp = tmp_path_factory.mktemp("logging")
    env = base_env(
        sqlite_url(tmp),
        fake_ai_process.base_url,
        LOG_FORMAT="json",
        AI_API_KEY=AI_KEY,
        ADMIN_PASSWORD=ADMIN_PASSWORD,
        JOB_MAX_RETRIES="0",
    )
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    server = ExamsServer(env, tmp / "server.log").prepare()
    fake_ai_process.reset()
    server.start()
    try:
        answers = {**MATH_ANSWERS, "q5": SECRET_ANSWER}
        # A completed job, submitted with our own request id.
        response = submit(server, answers, **{"X-Request-ID": "test-req-0042"})
        assert response.headers["X-Request-ID"] == "test-req-0042"
        completed_id = response.json()["job_id"]
        final, _ = server.wait_final(completed_id)
        assert final["status"] == "completed", final

        # A failed job (no retries, the AI answers 500), with a request id the server generates.
        fake_ai_process.set_mode("error_500")
        response = submit(server, answers)
        generated_request_id = response.headers["X-Request-ID"]
        failed_id = response.json()["job_id"]
        final, _ = server.wait_final(failed_id)
        assert final["status"] == "failed", final

        # Rejected submissions carrying secrets: they must not reach the log either.
        rejected = server.submit({**MATH_ANSWERS, "q3": SECRET_NUMERIC_ANSWER})
        assert rejected.status_code == 422, rejected.text
        malformed = httpx.post(
            f"{server.base_url}/api/exam-results/process",
            content=b'{"exam_code": "MATH-101", "answers": {"q5": "' + SECRET_MALFORMED.encode() + b'"',
            headers={"Content-Type": "application/json"},
            timeout=10,
        )
        assert malformed.status_code == 400, malformed.text
    finally:
        fake_ai_process.reset()
        server.stop()  # the log is complete, shutdown lines included
    text = server.log()
    return LoggedRun(text, parse_log(text), completed_id, failed_id, generated_request_id)


def job_records(run: LoggedRun, job_id: str) -> list[dict[str, Any]]:
    """The pipeline's lines of one job (the submit request's own line carries the job too)."""
    return [r for r in run.records if r.get("job_id") == job_id and r["event"].startswith("exam processing")]


def test_the_submit_request_line_names_its_job(run: LoggedRun) -> None:
    lines = [r for r in run.records if r.get("job_id") == run.completed_id and r["event"] == "http request"]
    assert len(lines) == 1, lines
    assert lines[0]["status"] == 202
    assert (lines[0]["step"], lines[0]["attempt"]) == ("queued", 0)


def test_every_job_line_carries_job_id_exam_code_step_and_attempt(run: LoggedRun) -> None:
    with_job = [r for r in run.records if "job_id" in r]
    assert with_job
    for record in with_job:
        missing = [field for field in JOB_FIELDS if field not in record]
        assert not missing, f"{record['event']!r} line lacks {missing}: {record}"


def test_a_completed_job_logs_started_each_step_and_completed(run: LoggedRun) -> None:
    done = job_records(run, run.completed_id)
    names = [r["event"] for r in done]
    assert names[0] == "exam processing started", names
    assert names[-1] == "exam processing completed", names
    assert "exam processing failed" not in names, names
    steps = [r["step"] for r in done if r["event"] == "exam processing step"]
    assert steps == ["validating_exam", "processing_answers", "getting_ai_recommendations", "finalizing_results"]
    assert {r["exam_code"] for r in done} == {"MATH-101"}
    assert {r["attempt"] for r in done} == {1}
    assert isinstance(done[-1].get("duration_seconds"), int | float), done[-1]
    # `grep "exam processing"` finds them all.
    grepped = [line for line in run.text.splitlines() if "exam processing" in line and run.completed_id in line]
    assert len(grepped) == len(done)


def test_a_failed_job_logs_exam_processing_failed_with_the_error(run: LoggedRun) -> None:
    failed = job_records(run, run.failed_id)
    names = [r["event"] for r in failed]
    assert names[0] == "exam processing started", names
    assert "exam processing completed" not in names, names
    line = next((r for r in failed if r["event"] == "exam processing failed"), None)
    assert line is not None, names
    assert line["level"] == "error"
    assert line["step"] == "getting_ai_recommendations"
    assert line["exam_code"] == "MATH-101"
    assert line.get("error"), line


def test_request_lines_carry_the_request_id_sent_back_in_x_request_id(run: LoggedRun) -> None:
    requests = [r for r in run.records if r["event"] == "http request"]
    assert requests
    assert all(r.get("request_id") for r in requests), requests
    by_id = {r["request_id"]: r for r in requests}
    assert by_id["test-req-0042"]["path"] == "/api/exam-results/process"
    assert by_id["test-req-0042"]["status"] == 202
    assert by_id[run.generated_request_id]["status"] == 202
    assert {r["status"] for r in requests} >= {202, 400, 422}
    assert all(isinstance(r.get("duration_ms"), int | float) for r in requests)
    # Successful status polls (every 2 s per student) are debug lines, not info lines.
    assert not [r for r in requests if r["path"].startswith("/api/exam-results/status/") and r["status"] < 400]


def test_no_answer_api_key_or_password_anywhere_in_the_log(run: LoggedRun) -> None:
    for secret in SECRETS:
        assert secret not in run.text, f"{secret!r} appears in the log"


def test_only_job_failures_are_logged_as_errors(run: LoggedRun) -> None:
    alarming = [
        r for r in run.records if r["level"] in {"error", "critical"} and r["event"] != "exam processing failed"
    ]
    assert not alarming, [r["event"] for r in alarming]
