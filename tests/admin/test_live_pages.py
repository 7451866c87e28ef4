"""The dashboard's live parts as server-sent events, in process: the job page's stream follows a
job to its end, and the jobs list's stream sends the rows again when a job appears."""

from __future__ import annotations

import threading
import time

import pytest
from test_access import OPERATOR_PASSWORD, login, store_job

import admin.live
from jobs.live import LiveJobs
from support import ExamsApp

pytestmark = pytest.mark.timeout(60)


def events_of(text: str) -> list[tuple[str, str]]:
    """``(event, data)`` of each server-sent event in a whole response body."""
    found = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        lines = [line for line in block.split("\n") if line and not line.startswith(":")]
        name = next((line[7:] for line in lines if line.startswith("event: ")), "message")
        data = "\n".join(line[6:] for line in lines if line.startswith("data: "))
        if data:
            found.append((name, data))
    return found


def test_the_job_page_stream_follows_the_job_to_its_end(admin_app: ExamsApp) -> None:
    client = admin_app.http
    assert login(client, "ops", OPERATOR_PASSWORD).status_code == 303
    job_id = admin_app.submitted()

    response = client.get(f"/admin/jobs/{job_id}/events")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = events_of(response.text)
    names = [name for name, _ in events]
    assert names[-1] == "done", names
    assert set(names[:-1]) == {"job"}, names
    assert events[-1][1] == "completed"
    last_html = events[-2][1]
    assert 'data-status="completed"' in last_html
    assert 'id="job-status"' in last_html
    page = client.get(f"/admin/jobs/{job_id}").text
    assert 'sse-connect="' not in page, "a finished job's page opens no stream"


def test_an_unfinished_jobs_page_follows_it_through_its_stream(admin_app: ExamsApp) -> None:
    client = admin_app.http
    assert login(client, "ops", OPERATOR_PASSWORD).status_code == 303
    for fields in ({}, {"status": "processing", "current_step": "getting_ai_recommendations", "progress": 40}):
        job_id = store_job(admin_app, **fields)
        page = client.get(f"/admin/jobs/{job_id}").text
        assert f'sse-connect="/admin/jobs/{job_id}/events"' in page, fields
        assert 'sse-swap="job"' in page
        assert 'sse-close="done"' in page
        assert 'hx-ext="sse"' in page
        assert "hx-trigger" not in page.split('sse-connect="')[1].split(">")[0], "the job is not polled"


def test_the_jobs_list_stream_sends_the_rows_again_when_a_job_appears(
    admin_app: ExamsApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(admin.live, "STREAM_SECONDS", 3.0)
    client = admin_app.http
    assert login(client, "ops", OPERATOR_PASSWORD).status_code == 303
    page = client.get("/admin/jobs?status=pending").text
    assert 'sse-connect="/admin/jobs/events?status=pending"' in page
    assert "hx-trigger" not in page.split('id="job-rows"')[1].split(">")[0], "the rows are not polled"
    live: LiveJobs = client.app.state.admin_services.live
    runs = live.query_runs
    bodies: list[str] = []
    reader = threading.Thread(target=lambda: bodies.append(client.get("/admin/jobs/events?status=pending").text))
    reader.start()
    deadline = time.monotonic() + 10
    while live.query_runs == runs and time.monotonic() < deadline:
        time.sleep(0.02)

    job_id = store_job(admin_app)  # written in another event loop: published to this process's hub
    reader.join(30)

    rows = [data for name, data in events_of(bodies[0]) if name == "rows"]
    assert len(rows) >= 2, rows
    assert job_id not in rows[0]
    assert f'data-job-id="{job_id}"' in rows[-1]
