"""Results, cancel and callbacks through the app in process (``create_app`` + ``TestClient``).

The embedded worker runs the jobs; the built-in fake AI answers (``FAKE_AI_LATENCY``), or the
rule-based recommendations when ``AI_API_ENABLED=false``.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import http.server
import io
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from support import NO_ENV_FILE, ExamsApp, sqlite_url

PROBLEM = "application/problem+json"
ANSWERS = {"q1": "b", "q2": ["a", "c"], "q3": 3.14, "q4": True, "q5": "photosynthesis"}
SECRET = "callback-secret-for-tests"


@pytest.fixture
def make(tmp_path: Path) -> Iterator[Callable[..., ExamsApp]]:
    from core.settings import load_settings

    apps: list[ExamsApp] = []
    url = sqlite_url(tmp_path)

    def build(**env: str) -> ExamsApp:
        base = {"DATABASE_URL": url, "QUEUE_CONNECTION": "embedded", "LOG_FORMAT": "json", "WORKER_THREADS": "4"}
        app = ExamsApp(load_settings({**base, **env}, env_file=NO_ENV_FILE))
        apps.append(app)
        return app.prepare().start()

    yield build
    for app in apps:
        app.stop()


def submit(app: ExamsApp, **extra: Any) -> dict[str, Any]:
    body = {"exam_code": "MATH-101", "student_id": "s-1042", "answers": ANSWERS, **extra}
    response = app.http.post("/api/exam-results/process", json=body)
    assert response.status_code == 202, response.text
    return dict(response.json())


def wait_for(app: ExamsApp, job_id: str, statuses: set[str], timeout: float = 30.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        doc = app.status(job_id)
        if doc["status"] in statuses:
            return doc
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} never reached {statuses}: {doc}")


def test_a_result_outlasts_its_job(
    make: Callable[..., ExamsApp], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    app = make(AI_API_ENABLED="false")
    job_id = submit(app)["job_id"]
    final = wait_for(app, job_id, {"completed", "failed"})
    assert final["status"] == "completed", final
    assert final["error_code"] is None

    from server.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATABASE_URL", app.database_url)
    outcome = CliRunner().invoke(main, ["jobs", "cleanup", "--older-than-days", "0"])
    assert outcome.exit_code == 0, outcome.output
    assert "deleted 1 job(s)" in outcome.output
    assert app.http.get(f"/api/exam-results/status/{job_id}").status_code == 404

    one = app.http.get(f"/api/exam-results/{job_id}")
    assert one.status_code == 200, one.text
    doc = one.json()
    assert set(doc) == {"job_id", "exam_code", "student_id", "graded_at", "result"}
    assert doc["result"] == final["result"]
    assert doc["graded_at"]

    listed = app.http.get("/api/exam-results", params={"student_id": "s-1042", "passed": "true"}).json()
    assert [item["job_id"] for item in listed["items"]] == [job_id]
    assert listed["next_cursor"] is None
    assert app.http.get("/api/exam-results", params={"passed": "false"}).json()["items"] == []

    export = app.http.get("/api/exam-results", params={"exam_code": "MATH-101", "format": "csv"})
    assert export.status_code == 200
    assert export.headers["content-type"].startswith("text/csv")
    assert export.content.startswith(b"\xef\xbb\xbf")
    rows = list(csv.reader(io.StringIO(export.content.decode("utf-8-sig"), newline="")))
    assert rows[0][:8] == [
        "job_id",
        "exam_code",
        "student_id",
        "score",
        "max_score",
        "percentage",
        "passed",
        "graded_at",
    ]
    assert rows[1][0] == job_id

    summary = app.http.get("/api/exams/MATH-101/summary").json()
    assert summary["exam_code"] == "MATH-101"
    assert summary["results"] == 1
    assert summary["mean_percentage"] == final["result"]["percentage"]
    assert summary["pass_rate"] == 1.0
    assert {t["topic"] for t in summary["topics"]} == {t["topic"] for t in final["result"]["topics"]}


def test_results_api_errors_are_localized_problems(make: Callable[..., ExamsApp]) -> None:
    app = make(AI_API_ENABLED="false")
    for path in ("/api/exam-results/not-a-uuid", "/api/exam-results/6f1c0000-0000-4000-8000-000000000000"):
        response = app.http.get(path, headers={"Accept-Language": "ar"})
        assert response.status_code == 404
        assert response.headers["content-type"].startswith(PROBLEM)
        assert response.headers["content-language"] == "ar"
    bad = app.http.get(
        "/api/exam-results",
        params={"limit": "501", "passed": "maybe", "graded_after": "yesterday", "cursor": "zzz"},
    )
    assert bad.status_code == 422
    problem = bad.json()
    assert problem["type"] == "/problems/invalid-query"
    assert {e["field"] for e in problem["errors"]} == {"limit", "passed", "graded_after"}
    cursor = app.http.get("/api/exam-results", params={"cursor": "zzz"})
    assert (cursor.status_code, cursor.json()["errors"][0]["field"]) == (422, "cursor")
    assert app.http.get("/api/exams/NOPE-1/summary").status_code == 404
    # A pending job has no result yet.
    pending = app.http.get("/api/exam-results/" + submit(app)["job_id"])
    assert pending.status_code in (200, 404)


def test_cancel_during_the_ai_wait_frees_the_worker_within_2_s(make: Callable[..., ExamsApp]) -> None:
    app = make(FAKE_AI_LATENCY="10", WORKER_THREADS="1", AI_API_TIMEOUT="30")
    first = submit(app)["job_id"]
    waiting = wait_for(app, first, {"processing"})
    deadline = time.monotonic() + 10
    while waiting["current_step"] != "getting_ai_recommendations" and time.monotonic() < deadline:
        time.sleep(0.05)
        waiting = app.status(first)
    second = submit(app)["job_id"]
    time.sleep(0.5)
    assert app.status(second)["status"] == "pending"  # the one worker slot is taken

    started = time.monotonic()
    response = app.http.post(f"/api/exam-results/status/{first}/cancel", headers={"Accept-Language": "ar"})
    assert response.status_code == 200, response.text
    doc = response.json()
    assert (doc["status"], doc["current_step"], doc["error_message"], doc["error_code"]) == (
        "cancelled",
        "cancelled",
        None,
        None,
    )
    assert doc["current_step_label"] == "ملغاة"
    assert doc["progress"] >= waiting["progress"]
    wait_for(app, second, {"processing", "completed"}, timeout=2.0)
    assert time.monotonic() - started < 2.5

    # Idempotent; and the abandoned AI answer never lands.
    again = app.http.post(f"/api/exam-results/status/{first}/cancel")
    assert (again.status_code, again.json()["status"]) == (200, "cancelled")
    time.sleep(1.0)
    after = app.status(first)
    assert (after["status"], after["result"], after["attempts"]) == ("cancelled", None, waiting["attempts"])
    assert app.http.get(f"/api/exam-results/{first}").status_code == 404

    events = app.http.get(f"/api/exam-results/status/{first}/events").text
    assert "event: cancelled" in events


def test_cancel_rules(make: Callable[..., ExamsApp], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    app = make(AI_API_ENABLED="false")
    done = submit(app)["job_id"]
    wait_for(app, done, {"completed"})
    conflict = app.http.post(f"/api/exam-results/status/{done}/cancel")
    assert conflict.status_code == 409
    assert conflict.headers["content-type"].startswith(PROBLEM)
    assert conflict.json()["type"] == "/problems/already-finished"
    unknown = app.http.post("/api/exam-results/status/6f1c0000-0000-4000-8000-000000000000/cancel")
    assert unknown.status_code == 404

    from server.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATABASE_URL", app.database_url)
    runner = CliRunner()
    outcome = runner.invoke(main, ["jobs", "cancel", done])
    assert outcome.exit_code == 1
    assert "already finished" in outcome.output


@pytest.fixture
def receiver() -> Iterator[list[tuple[dict[str, str], bytes]]]:
    received: list[tuple[dict[str, str], bytes]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            received.append(({k.lower(): v for k, v in self.headers.items()}, body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    received.append(({"port": str(server.server_address[1])}, b""))
    yield received
    server.shutdown()
    server.server_close()


def test_a_completed_job_is_called_back_signed(make: Callable[..., ExamsApp], receiver: list[Any]) -> None:
    port = receiver.pop(0)[0]["port"]
    app = make(AI_API_ENABLED="false", CALLBACK_SECRET=SECRET, CALLBACK_ALLOWED_HOSTS="127.0.0.1")
    refused = app.http.post(
        "/api/exam-results/process",
        json={
            "exam_code": "MATH-101",
            "student_id": "s-1",
            "answers": ANSWERS,
            "callback_url": "https://evil.example/",
        },
        headers={"Accept-Language": "ar"},
    )
    assert refused.status_code == 422
    assert refused.json()["errors"][0]["field"] == "callback_url"
    job_id = submit(app, callback_url=f"http://127.0.0.1:{port}/hook")["job_id"]
    wait_for(app, job_id, {"completed"})
    deadline = time.monotonic() + 10
    while not receiver and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(receiver) == 1
    headers, body = receiver[0]
    assert headers["x-exams-event"] == "job.completed"
    assert headers["x-exams-delivery"]
    expected = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert headers["x-exams-signature"] == f"sha256={expected}"
    assert b'"status":"completed"' in body


def test_callbacks_are_refused_when_disabled(make: Callable[..., ExamsApp]) -> None:
    app = make(AI_API_ENABLED="false")
    response = app.http.post(
        "/api/exam-results/process",
        json={"exam_code": "MATH-101", "student_id": "s-1", "answers": ANSWERS, "callback_url": "https://a.example/"},
    )
    assert response.status_code == 422
    assert response.json()["errors"] == [
        {"field": "callback_url", "message": "Callbacks are disabled on this service."}
    ]


def test_openapi_documents_the_new_routes_and_their_problems(make: Callable[..., ExamsApp]) -> None:
    app = make(AI_API_ENABLED="false")
    paths = app.http.get("/api/documentation/openapi.json").json()["paths"]
    expected = {
        ("/api/exam-results/status/{job_id}/cancel", "post"): {"404", "409"},
        ("/api/exam-results/{job_id}", "get"): {"404"},
        ("/api/exam-results", "get"): {"422"},
        ("/api/exams/{code}/summary", "get"): {"404"},
    }
    for (path, method), codes in expected.items():
        responses = paths[path][method]["responses"]
        for code in codes:
            assert PROBLEM in responses[code]["content"], (path, code)
