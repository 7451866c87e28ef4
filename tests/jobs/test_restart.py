"""Restarts of the embedded server: a job killed mid-way, and jobs accepted just before a stop.

Both tests share one server (each start costs seconds) with one worker thread, so jobs beyond
the first wait in the in-memory queue that a stop loses: only the database remembers them.
"""

from __future__ import annotations

import signal
import sqlite3
import time
from collections.abc import Iterator
from typing import Any
from uuid import UUID

import pytest

from jobs.progress import step_index
from support import ExamsServer, FakeAIProcess, base_env, json_lines, sqlite_url


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, fake_ai_process: FakeAIProcess) -> Iterator[ExamsServer]:
    tmp = tmp_path_factory.mktemp("restart")
    env = base_env(sqlite_url(tmp), fake_ai_process.base_url, AI_API_TIMEOUT="15", WORKER_THREADS="1")
    proc = ExamsServer(env, tmp / "server.log").prepare().start()
    yield proc
    proc.stop()


@pytest.fixture
def running(server: ExamsServer) -> ExamsServer:
    """The module's server, started again if an earlier test left it stopped."""
    if server.proc is None or server.proc.poll() is not None:
        server.start()
    return server


def log_records(server: ExamsServer) -> list[dict[str, Any]]:
    return json_lines(server.log())


def completed_events(server: ExamsServer, job_id: str) -> int:
    return sum(r.get("event") == "exam processing completed" and r.get("job_id") == job_id for r in log_records(server))


def wait_for_step(server: ExamsServer, job_id: str, step: str, timeout: float = 30.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    doc: dict[str, Any] = {}
    while time.monotonic() < deadline:
        doc = server.status(job_id)
        if doc["current_step"] == step:
            return doc
        assert doc["status"] in ("pending", "processing"), doc
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} never reached {step}: {doc}")


def db_rows(server: ExamsServer) -> dict[str, tuple[str, int]]:
    path = server.env["DATABASE_URL"].split(":///", 1)[1]
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT job_id, status, attempts FROM exam_processing_jobs").fetchall()
    # GUID is BINARY(16) on SQLite
    return {str(UUID(bytes=job_id)): (status, attempts) for job_id, status, attempts in rows}


def test_a_job_killed_during_the_ai_call_completes_once_after_a_restart(
    running: ExamsServer, fake_ai_http: FakeAIProcess
) -> None:
    server = running
    fake_ai_http.set_mode("ok", latency=3)
    response = server.submit()
    assert response.status_code == 202
    job_id = response.json()["job_id"]
    before = wait_for_step(server, job_id, "getting_ai_recommendations")
    server.kill()
    assert server.proc is not None
    assert server.proc.returncode == -signal.SIGKILL

    server.start()
    final, seen = server.wait_final(job_id, timeout=60)
    assert final["status"] == "completed", final
    assert final["attempts"] == 2
    assert final["progress"] == 100
    assert final["result"]["recommendations_source"] == "ai"
    assert all(doc["progress"] >= before["progress"] for doc in seen)  # resumed, not restarted from 0
    assert all(step_index(doc["current_step"]) >= step_index("getting_ai_recommendations") for doc in seen)
    assert completed_events(server, job_id) == 1
    assert fake_ai_http.requests() == 2  # the killed call, and the one after the restart


def test_jobs_accepted_just_before_a_stop_complete_after_a_restart(
    running: ExamsServer, fake_ai_http: FakeAIProcess
) -> None:
    server = running
    fake_ai_http.set_mode("ok", latency=1)
    log_start = len(log_records(server))
    job_ids = []
    for _ in range(4):
        response = server.submit()
        assert response.status_code == 202
        job_ids.append(response.json()["job_id"])
    server.stop(signal.SIGTERM)
    assert server.proc is not None
    # uvicorn re-raises the SIGTERM it handled once shut down; only a kill after the timeout is wrong
    assert server.proc.returncode in (0, -signal.SIGTERM), f"no graceful stop\n{server.log()[-3000:]}"
    rows = db_rows(server)
    assert set(job_ids) <= set(rows)  # every accepted submission was stored
    assert all(rows[j][0] != "failed" for j in job_ids), rows  # a stop is not a failure
    assert any(rows[j][0] != "completed" for j in job_ids), "all finished before the stop: nothing was tested"

    fake_ai_http.set_mode("ok", latency=0.2)
    server.start()
    for job_id in job_ids:
        final, _ = server.wait_final(job_id, timeout=60)
        assert final["status"] == "completed", final
        assert completed_events(server, job_id) == 1

    # the graceful stop and the start after it went without errors
    problems = [
        f"{r.get('logger')}: {r.get('event')}"
        for r in log_records(server)[log_start:]
        if r.get("level") in ("error", "critical")
    ]
    assert problems == []
