"""The seed's feature test: submit, poll until completed, progress forward, result correct.

In process (``create_app`` and its embedded worker), on SQLite and on PostgreSQL.
"""

from __future__ import annotations

from jobs.progress import step_index
from support import ExamsApp


def test_submit_then_poll_until_completed(app_each_database: ExamsApp) -> None:
    server = app_each_database
    response = server.submit()
    assert response.status_code == 202
    body = response.json()
    assert response.headers["location"] == f"/api/exam-results/status/{body['job_id']}"
    assert response.headers["retry-after"] == "2"
    assert (body["status"], body["progress"], body["current_step"]) == ("pending", 0, "queued")

    final, seen = server.wait_final(body["job_id"])
    assert final["status"] == "completed", final
    progresses = [doc["progress"] for doc in seen]
    assert progresses == sorted(progresses)
    steps = [step_index(doc["current_step"]) for doc in seen]
    assert steps == sorted(steps)
    result = final["result"]
    assert result["recommendations_source"] == "ai"
    assert {q["question_id"]: q["correct"] for q in result["questions"]}["q1"] is True
