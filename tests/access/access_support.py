"""Helpers of the API-access tests: apps with ``API_AUTH=tokens`` (in process), tokens, requests.

The apps run with the AI disabled (rule-based recommendations): a job completes in well under a
second, and these tests are about who may see it, not about the AI.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx

from core.db import Database
from core.settings import load_settings
from support import MATH_ANSWERS, NO_ENV_FILE, ExamsApp, app_settings

#: No AI process is needed: AI_API_ENABLED=false never calls it.
NO_AI = "http://127.0.0.1:9/v1"
TOKENS = {"API_AUTH": "tokens", "AI_API_ENABLED": "false"}


def add_token(database_url: str, name: str, *scopes: str) -> str:
    """Create an API token as ``exams tokens create`` does; return the token."""
    from access.tokens import create_token

    async def work() -> str:
        database = Database.from_settings(load_settings({"DATABASE_URL": database_url}, env_file=NO_ENV_FILE))
        try:
            async with database.transaction() as session:
                return (await create_token(session, name, scopes))[1]
        finally:
            await database.dispose()

    return asyncio.run(work())


def bearer(token: str, **headers: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", **headers}


def submit(app: ExamsApp, token: str | None, *, student_id: str = "s-1042", **headers: str) -> httpx.Response:
    body: dict[str, Any] = {"exam_code": "MATH-101", "student_id": student_id, "answers": MATH_ANSWERS}
    sent = bearer(token, **headers) if token else headers
    return app.http.post("/api/exam-results/process", json=body, headers=sent)


def wait_completed(app: ExamsApp, token: str, job_id: str, timeout: float = 30.0) -> dict[str, Any]:
    """Poll as ``token`` until the job completed; its status document."""
    deadline = time.monotonic() + timeout
    while True:
        response = app.http.get(f"/api/exam-results/status/{job_id}", headers=bearer(token))
        assert response.status_code == 200, response.text
        doc: dict[str, Any] = response.json()
        if doc["status"] == "completed":
            return doc
        assert doc["status"] in ("pending", "processing"), doc
        assert time.monotonic() < deadline, f"job {job_id} not completed after {timeout} s: {doc}"
        time.sleep(0.05)


class TokensApp:
    """An app with ``API_AUTH=tokens`` on a migrated database with the sample catalog, and its tokens."""

    def __init__(self, database_url: str, *, prepare: bool = False, **env: str) -> None:
        self.app = ExamsApp(app_settings(database_url, NO_AI, **{**TOKENS, **env}))
        if prepare:
            self.app.prepare()
        self.database_url = database_url
        self.tokens: dict[str, str] = {}

    def token(self, name: str, *scopes: str) -> str:
        """The token ``name`` (created on first use with ``scopes``)."""
        if name not in self.tokens:
            self.tokens[name] = add_token(self.database_url, name, *scopes)
        return self.tokens[name]

    def started(self) -> ExamsApp:
        """The app, running (another test's app may have stopped it since)."""
        return self.app.start()
