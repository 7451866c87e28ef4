"""With ``API_AUTH=tokens`` a token without ``read_all`` sees only what it submitted (SPEC "API access").

On SQLite and PostgreSQL (the reads are narrowed in SQL): another token's job answers ``404`` on
every route (status, events, cancel, result), lists and CSV exports leave it out, a ``read_all``
token sees everything, and the ownership outlasts the job row (the result carries it). Jobs
submitted with ``API_AUTH=off`` have no owner: only ``read_all`` tokens see them.
"""

from __future__ import annotations

import uuid
from typing import Any

from access_support import TokensApp, bearer, submit, wait_completed
from sqlalchemy import delete

from core.settings import load_settings
from jobs.models import ExamProcessingJob, utcnow
from jobs.results import write_result
from jobs.services import JobService, Submission
from support import MATH_ANSWERS, NO_ENV_FILE, run_in_transaction


def _run_on(database_url: str, work: Any) -> Any:
    return run_in_transaction(load_settings({"DATABASE_URL": database_url}, env_file=NO_ENV_FILE), work)


def _owner_less_job(database_url: str, result: dict[str, Any]) -> str:
    """A completed job and its result as ``API_AUTH=off`` stores them (no owner)."""

    async def work(session: Any) -> str:
        job, _ = await JobService(session=session).submit(
            Submission(exam_code="MATH-101", student_id="s-off", answers=MATH_ANSWERS)
        )
        now = utcnow()
        job.mark_processing(now)
        job.mark_completed(result, now)
        await write_result(await session.connection(), job, result, now)
        return str(job.job_id)

    return str(_run_on(database_url, work))


def _delete_job_row(database_url: str, job_id: str) -> None:
    """What the daily cleanup does to a finished job (the result stays)."""

    async def work(session: Any) -> None:
        await session.execute(delete(ExamProcessingJob).where(ExamProcessingJob.job_id == uuid.UUID(job_id)))

    _run_on(database_url, work)


def _listed(app: Any, token: str, **params: str) -> set[str]:
    response = app.http.get("/api/exam-results", params=params, headers=bearer(token))
    assert response.status_code == 200, response.text
    return {item["job_id"] for item in response.json()["items"]}


def _csv_ids(app: Any, token: str) -> set[str]:
    response = app.http.get("/api/exam-results", params={"format": "csv"}, headers=bearer(token))
    assert response.status_code == 200, response.text
    return {line.split(",")[0] for line in response.text.lstrip("\ufeff").splitlines()[1:]}


def test_a_token_sees_only_its_own_jobs_and_results(tokens_app_each_database: TokensApp) -> None:
    made = tokens_app_each_database
    own, other, reader = made.token("school-a"), made.token("school-b"), made.token("reporting", "read_all")
    app = made.started()

    mine = submit(app, own)
    assert mine.status_code == 202, mine.text
    job_id = mine.json()["job_id"]
    done = wait_completed(app, own, job_id)
    theirs = submit(app, other, student_id="s-2000").json()["job_id"]
    wait_completed(app, other, theirs)
    legacy = _owner_less_job(made.database_url, done["result"])

    # Another token: every route answers as for an id that does not exist.
    unknown = str(uuid.uuid4())
    for path, method in (
        ("/api/exam-results/status/{}", "GET"),
        ("/api/exam-results/status/{}/events", "GET"),
        ("/api/exam-results/status/{}/cancel", "POST"),
        ("/api/exam-results/{}", "GET"),
    ):
        hidden = app.http.request(method, path.format(job_id), headers=bearer(other))
        missing = app.http.request(method, path.format(unknown), headers=bearer(other))
        assert hidden.status_code == missing.status_code == 404, (path, hidden.text)
        assert hidden.json()["type"] == missing.json()["type"] == "/problems/not-found"
        assert hidden.headers["content-type"] == "application/problem+json"
    # The owner and a read_all token see it (the cancel above changed nothing: it completed).
    assert app.http.get(f"/api/exam-results/status/{job_id}", headers=bearer(own)).json()["status"] == "completed"
    assert app.http.post(f"/api/exam-results/status/{job_id}/cancel", headers=bearer(own)).status_code == 409
    assert app.http.get(f"/api/exam-results/status/{job_id}", headers=bearer(reader)).status_code == 200
    assert app.http.get(f"/api/exam-results/{job_id}", headers=bearer(reader)).status_code == 200

    # Lists and exports are narrowed to the caller's own results; read_all sees every one.
    assert _listed(app, own) == _csv_ids(app, own) == {job_id}
    assert _listed(app, other) == _csv_ids(app, other) == {theirs}
    assert _listed(app, reader) == _csv_ids(app, reader) == {job_id, theirs, legacy}
    assert _listed(app, other, student_id="s-1042") == set()
    assert _listed(app, reader, student_id="s-1042") == {job_id}

    # A job submitted with API_AUTH=off: no owner, so only read_all tokens see it.
    for token, code in ((own, 404), (other, 404), (reader, 200)):
        assert app.http.get(f"/api/exam-results/status/{legacy}", headers=bearer(token)).status_code == code
        assert app.http.get(f"/api/exam-results/{legacy}", headers=bearer(token)).status_code == code

    # The daily cleanup deletes the job row; the result keeps its owner.
    _delete_job_row(made.database_url, job_id)
    assert app.http.get(f"/api/exam-results/status/{job_id}", headers=bearer(own)).status_code == 404
    kept = app.http.get(f"/api/exam-results/{job_id}", headers=bearer(own))
    assert kept.status_code == 200
    assert kept.json()["result"] == done["result"]
    assert app.http.get(f"/api/exam-results/{job_id}", headers=bearer(other)).status_code == 404
    assert _listed(app, own) == {job_id}
    assert job_id not in _listed(app, other)


def test_pages_of_a_token_hold_only_its_results(tokens_app_each_database: TokensApp) -> None:
    made = tokens_app_each_database
    own, other = made.token("pager"), made.token("pager-other")
    app = made.started()
    ids = [submit(app, own, student_id=f"s-page-{i}").json()["job_id"] for i in range(3)]
    foreign = submit(app, other, student_id="s-page-x").json()["job_id"]
    for job_id in ids:
        wait_completed(app, own, job_id)
    wait_completed(app, other, foreign)
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": "2", **({"cursor": cursor} if cursor else {})}
        page = app.http.get("/api/exam-results", params=params, headers=bearer(own)).json()
        seen += [item["job_id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == sorted(ids)
    # A cursor is bound to its caller's filters: another token cannot page with it.
    first = app.http.get("/api/exam-results", params={"limit": "1"}, headers=bearer(own)).json()
    borrowed = app.http.get(
        "/api/exam-results", params={"limit": "1", "cursor": first["next_cursor"]}, headers=bearer(other)
    )
    assert borrowed.status_code == 422
    assert borrowed.json()["type"] == "/problems/invalid-query"


def test_a_token_without_submit_cannot_submit(tokens_app_each_database: TokensApp) -> None:
    made = tokens_app_each_database
    reader = made.token("read-only", "read_all")
    app = made.started()
    before = len(app.http.get("/api/exam-results", headers=bearer(reader)).json()["items"])
    for lang, title in (("en", "Forbidden"), ("ar", "ممنوع")):
        response = submit(app, reader, **{"Accept-Language": lang})
        assert response.status_code == 403
        assert response.headers["content-type"] == "application/problem+json"
        problem = response.json()
        assert problem["type"] == "/problems/forbidden"
        assert problem["title"] == title
        assert "submit" in problem["detail"]
        assert 'error="insufficient_scope"' in response.headers["www-authenticate"]
    assert len(app.http.get("/api/exam-results", headers=bearer(reader)).json()["items"]) == before


def test_another_tokens_idempotency_key_never_returns_its_job(tokens_app_each_database: TokensApp) -> None:
    made = tokens_app_each_database
    own, other = made.token("key-owner"), made.token("key-borrower")
    app = made.started()
    key = str(uuid.uuid4())
    first = submit(app, own, **{"Idempotency-Key": key})
    assert first.status_code == 202
    assert submit(app, own, **{"Idempotency-Key": key}).json()["job_id"] == first.json()["job_id"]
    for student_id in ("s-1042", "s-other"):  # the same body, and another one
        reused = submit(app, other, student_id=student_id, **{"Idempotency-Key": key})
        assert reused.status_code == 422
        assert reused.json()["type"] == "/problems/idempotency-key-reused"
