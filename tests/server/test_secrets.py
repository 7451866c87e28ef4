"""Secrets never appear in logs, problem documents, the dashboard, ``/metrics`` or command output.

The app runs in process with a distinctive value for every secret (each contains ``LEAKCHECK``):
the AI key, the admin password, ``SECRET_KEY``, ``CALLBACK_SECRET``, and passwords inside
``DATABASE_URL`` and ``REDIS_URL``; the API is called with an API token
(``API_AUTH=tokens``). A realistic session drives it (submissions that complete,
fail validation and fail at the AI, whose error answer quotes the key back as real providers do;
a callback; the dashboard with a wrong and a right login, its pages and an operator retry;
``/metrics``, ``/ready``), then everything it produced is searched: every response's body and
headers, the log (with any exception that ended a thread) and the callbacks sent.
Start-up errors and the demo's banner are checked through the real ``exams`` command.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from core.settings import SettingsError, load_settings
from support import EXAMS, MATH_ANSWERS, NO_ENV_FILE, ExamsApp, FakeAIProcess, Process, free_port, sqlite_url

MARK = "LEAKCHECK"
SECRETS = {
    "AI_API_KEY": f"sk-{MARK}-ai-key-7f3a9c",
    "ADMIN_PASSWORD": f"{MARK}-admin-pw-5b21",
    "SECRET_KEY": f"{MARK}-secret-key-c0ffee-0123456789",
    "CALLBACK_SECRET": f"{MARK}-callback-secret-9e8d",
}
DB_PASSWORD = f"{MARK}-db-pw-4242"
REDIS_PASSWORD = f"{MARK}-redis-pw-1717"
WRONG_PASSWORD = f"{MARK}-mistyped-pw"
LOGIN_TOKEN = re.compile(r'name="_login" value="([^"]+)"')
CSRF = re.compile(r'name="_csrf" value="([^"]+)"')
FAILED_BEFORE = re.compile(r'name="failed_before" value="([^"]+)"')


def leaks(outputs: list[tuple[str, str]], *others: str) -> list[str]:
    """Where ``MARK`` (part of every secret we chose) or another secret shows up, with some context."""
    found = []
    for label, text in outputs:
        for secret in (MARK, *others):
            for match in re.finditer(re.escape(secret), text):
                found.append(f"{label}: …{text[max(0, match.start() - 80) : match.end() + 40]!r}…")
    return found


def api_token(app: ExamsApp) -> str:
    """A new API token (``exams tokens create``) in the app's database."""
    from access.tokens import create_token
    from core.db import Database

    async def work() -> str:
        database = Database.from_settings(app.settings)
        try:
            async with database.transaction() as session:
                return (await create_token(session, "leak-check"))[1]
        finally:
            await database.dispose()

    return asyncio.run(work())


# --- a stand-in AI provider that quotes the key back, and a callback receiver ---------------------


class Provider(ThreadingHTTPServer):
    """``/v1/chat/completions`` relayed to the fake AI (``mode`` ``ok``) or refused quoting the bearer
    key (``echo_401``, as OpenAI's "Incorrect API key provided: …"); ``/hook`` records callbacks."""

    def __init__(self, fake_ai: str) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.fake_ai = fake_ai
        self.mode = "ok"
        self.keys: list[str] = []
        self.callbacks: list[str] = []

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    @property
    def hook_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hook"


class _Handler(BaseHTTPRequestHandler):
    server: Provider

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path == "/hook":
            self.server.callbacks.append(f"{self.headers}\n{body.decode(errors='replace')}")
            self._answer(204, b"")
            return
        key = self.headers.get("Authorization", "").removeprefix("Bearer ")
        self.server.keys.append(key)
        if self.server.mode == "ok":
            relayed = httpx.post(
                f"{self.server.fake_ai}/chat/completions",
                content=body,
                headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"},
                timeout=10,
            )
            self._answer(relayed.status_code, relayed.content)
            return
        message = f"Incorrect API key provided: {key}. You can find your API key in your account."
        self._answer(401, json.dumps({"error": {"message": message, "type": "invalid_request_error"}}).encode())

    def _answer(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        return


@pytest.fixture
def provider(fake_ai_http: FakeAIProcess) -> Iterator[Provider]:
    server = Provider(fake_ai_http.base_url)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


# --- the session ------------------------------------------------------------------------------


class Session:
    """Every response of the app's test client, kept for the search."""

    def __init__(self, app: ExamsApp) -> None:
        self.app = app
        self.responses: list[httpx.Response] = []
        app.http.event_hooks["response"].append(self.responses.append)

    def outputs(self) -> list[tuple[str, str]]:
        found = []
        for response in self.responses:
            label = f"{response.request.method} {response.request.url.path} -> {response.status_code}"
            headers = "\n".join(f"{k}: {v}" for k, v in response.headers.multi_items())
            response.read()
            found.append((label, f"{headers}\n\n{response.text}"))
        return found


def wait_final(app: ExamsApp, job_id: str) -> dict[str, Any]:
    final, _ = app.wait_final(job_id, timeout=60)
    return final


def login(app: ExamsApp, password: str) -> httpx.Response:
    page = app.http.get("/admin/login")
    token = LOGIN_TOKEN.search(page.text)
    assert token, page.text
    data = {"username": "admin", "password": password, "_login": token.group(1), "next": "/admin"}
    return app.http.post("/admin/login", data=data, follow_redirects=False)


def drive_api(app: ExamsApp, provider: Provider) -> tuple[str, str]:
    """Submissions that complete, are refused and fail at the AI; every read of them. Returns
    the completed and the failed job."""
    http = app.http
    body = {"exam_code": "MATH-101", "student_id": "s-1", "answers": MATH_ANSWERS, "callback_url": provider.hook_url}
    accepted = http.post("/api/exam-results/process", json=body)
    assert accepted.status_code == 202, accepted.text
    done = accepted.json()["job_id"]
    assert wait_final(app, done)["status"] == "completed"
    assert http.get(f"/api/exam-results/status/{done}/events").status_code == 200
    assert http.get(f"/api/exam-results/{done}").status_code == 200
    assert http.get("/api/exam-results", params={"student_id": "s-1", "format": "csv"}).status_code == 200

    provider.mode = "echo_401"
    failed = app.submitted()
    final = wait_final(app, failed)
    assert final["status"] == "failed", final
    assert "401" in (final["error_message"] or ""), final  # the provider's refusal, key masked
    assert http.get(f"/api/exam-results/status/{failed}", params={"lang": "ar"}).status_code == 200
    provider.mode = "ok"

    assert app.submit({**MATH_ANSWERS, "q3": "pi"}).status_code == 422
    malformed = http.post(
        "/api/exam-results/process", content=b'{"exam_code": ', headers={"Content-Type": "application/json"}
    )
    assert malformed.status_code == 400
    too_big = http.post(
        "/api/exam-results/process", content=b" " * (1024 * 1024 + 1), headers={"Content-Type": "application/json"}
    )
    assert too_big.status_code == 413
    assert http.get("/api/exam-results/status/not-a-job").status_code == 404
    elsewhere = {**body, "callback_url": "https://evil.example/steal"}
    assert http.post("/api/exam-results/process", json=elsewhere).status_code == 422
    assert http.post(f"/api/exam-results/status/{done}/cancel").status_code == 409
    return done, failed


def drive_dashboard(app: ExamsApp, failed: str) -> None:
    """A mistyped and a right login, the pages, and an operator retry of the failed job."""
    http = app.http
    assert login(app, WRONG_PASSWORD).status_code != 303
    assert login(app, SECRETS["ADMIN_PASSWORD"]).status_code == 303
    for path in ("/admin", "/admin/jobs", f"/admin/jobs/{failed}", "/admin/failed", "/admin/cleanup"):
        assert http.get(path).status_code == 200, path
    token = CSRF.search(http.get(f"/admin/jobs/{failed}").text)
    assert token
    headers = {"X-CSRF-Token": token.group(1), "HX-Request": "true"}
    form = {"action": "retry", "scope": "job", "job_id": failed}
    preview = http.post("/admin/actions/preview", data=form, headers=headers)
    assert preview.status_code == 200, preview.text
    frozen = FAILED_BEFORE.search(preview.text)
    assert frozen
    run = http.post(
        "/admin/actions/run", data={**form, "expected": "1", "failed_before": frozen.group(1)}, headers=headers
    )
    assert run.status_code == 200, run.text
    audit = http.get("/admin/audit")
    assert audit.status_code == 200
    assert "retried jobs" in audit.text


def test_no_secret_reaches_responses_logs_or_callbacks(
    pg_url: str,
    make_app: Callable[..., ExamsApp],
    provider: Provider,
) -> None:
    database_url = pg_url.replace("postgresql+asyncpg://postgres@", f"postgresql+asyncpg://postgres:{DB_PASSWORD}@")
    assert DB_PASSWORD in database_url  # PostgreSQL trusts the test user: the password is ignored, but present
    app = make_app(
        start=False,
        DATABASE_URL=database_url,
        AI_API_BASE_URL=provider.base_url,
        CALLBACK_ALLOWED_HOSTS="127.0.0.1",
        JOB_MAX_RETRIES="0",
        API_AUTH="tokens",
        **SECRETS,
    )
    token = api_token(app)
    app.start()
    app.http.headers["Authorization"] = f"Bearer {token}"
    session = Session(app)
    _done, failed = drive_api(app, provider)
    drive_dashboard(app, failed)
    for path in ("/", "/metrics", "/ready", "/health", "/api/exams", "/api/documentation/openapi.json"):
        assert session.app.http.get(path).status_code == 200, path
    deadline = time.monotonic() + 20
    while not provider.callbacks and time.monotonic() < deadline:
        time.sleep(0.1)
    assert provider.callbacks, "the completion callback never came"
    outputs = [*session.outputs(), ("settings repr", repr(app.settings))]
    app.stop()
    outputs.append(("app log", app.log()))

    # The same with the broker down, its URL carrying a password: /ready, /metrics and a submission
    # whose send fails (and is logged).
    broker_down = make_app(
        QUEUE_CONNECTION="redis",
        REDIS_URL=f"redis://:{REDIS_PASSWORD}@127.0.0.1:{free_port()}/0",
        AI_API_BASE_URL=provider.base_url,
        **SECRETS,
    )
    session = Session(broker_down)
    assert broker_down.http.get("/ready").status_code == 503
    assert broker_down.http.get("/metrics").status_code == 200
    assert broker_down.submit().status_code == 202
    deadline = time.monotonic() + 20
    while "enqueue failed" not in broker_down.log() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "enqueue failed" in broker_down.log()
    outputs += [*session.outputs(), ("settings repr", repr(broker_down.settings))]
    broker_down.stop()
    outputs.append(("broker-down app log", broker_down.log()))

    outputs += [(f"callback {i}", text) for i, text in enumerate(provider.callbacks)]

    # The secrets were in use: the provider got the key, the login took the password.
    assert SECRETS["AI_API_KEY"] in provider.keys
    assert any("x-exams-signature: sha256=" in text.lower() for text in provider.callbacks)
    assert not leaks(outputs, token), "\n".join(leaks(outputs, token))


def test_settings_errors_never_echo_a_secret() -> None:
    bad = [
        {"SECRET_KEY": f"{MARK}-short"[:15]},
        {"CALLBACK_SECRET": MARK},
        {"DATABASE_URL": f"mysql://exams:{DB_PASSWORD}@db/exams"},
        {"REDIS_URL": f"http://:{REDIS_PASSWORD}@cache:6379/0"},
        {"RABBITMQ_URL": f"redis://exams:{REDIS_PASSWORD}@mq/"},
    ]
    for environ in bad:
        with pytest.raises(SettingsError) as raised:
            load_settings({**SECRETS, **environ}, env_file=NO_ENV_FILE)
        assert MARK not in str(raised.value), str(raised.value)
        assert next(iter(environ)) in str(raised.value)


def test_commands_print_no_secret_at_start_up(pg_url: str, tmp_path: Path) -> None:
    """Bad settings and the production guard refuse ``exams serve`` without echoing a secret; the
    demo's banner shows the database without its password."""
    with_password = pg_url.replace("postgresql+asyncpg://postgres@", f"postgresql+asyncpg://postgres:{DB_PASSWORD}@")
    env = {**SECRETS, "DATABASE_URL": sqlite_url(tmp_path), "LOG_FORMAT": "json", "PROMETHEUS_MULTIPROC_DIR": ""}
    cases = [  # more bad values are checked in process by test_settings_errors_never_echo_a_secret
        {"DATABASE_URL": f"mysql://exams:{DB_PASSWORD}@db/exams"},
        {"DATABASE_URL": with_password, "SECRET_KEY": f"change-me-{MARK}-key"},
    ]
    procs = [
        subprocess.Popen(
            [EXAMS, "serve", "--port", "1"],
            env={**_base_environment(), **env, **case},
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for case in cases
    ]
    demo_env = {**env, "DATABASE_URL": with_password, "ADMIN_PASSWORD": ""}  # the demo prints its password
    demo = Process(["demo", "--port", str(free_port())], demo_env, tmp_path / "demo.log", None)
    try:
        demo.start()
        deadline = time.monotonic() + 60
        while "  AI  " not in demo.log() and time.monotonic() < deadline:  # the banner's last line
            time.sleep(0.1)
    finally:
        demo.stop()
    outputs = [("demo", demo.log())]
    for case, proc in zip(cases, procs, strict=True):
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 2, (case, out, err)
        assert "bad setting" in err, err
        outputs.append((f"serve with {sorted(case)}", out + err))
    assert "Database       postgresql+asyncpg://postgres:***@127.0.0.1:5432/" in demo.log(), demo.log()
    assert not leaks(outputs), "\n".join(leaks(outputs))


def _base_environment() -> dict[str, str]:
    """The test process's environment minus product settings."""
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "PYTHONPATH", "TMPDIR")
    return {k: v for k, v in os.environ.items() if not k.isupper() or k in keep}
