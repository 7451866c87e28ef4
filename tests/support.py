"""Shared test plumbing: free ports, a real ``exams`` server process, a real fake-AI process,
and the same app served in process (``ExamsApp``) for the API tests."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Awaitable, Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Self, TypeVar

import httpx

if TYPE_CHECKING:
    from litestar import Litestar
    from litestar.testing import TestClient
    from sqlalchemy.ext.asyncio import AsyncSession

    from core.settings import Settings

REPO = Path(__file__).resolve().parents[1]
EXAMS = str(Path(sys.executable).with_name("exams"))
SAMPLE_CATALOG = REPO / "src" / "exams" / "sample_catalog.json"
PG_ADMIN_URL = os.environ.get("TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/test")


def redis_test_url(slot: int) -> str:
    """A Redis database of the shared server that no other test process uses at the same time.

    Each pytest-xdist worker (``PYTEST_XDIST_WORKER`` = ``gw0``, ``gw1``, …) gets three databases
    of its own, counted down from 15: ``slot`` 0 for the API tests, 1 for supervisor, 2 for metrics.
    """
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    database = 15 - (int(worker or 0) * 3 + slot)
    if database < 0:
        raise RuntimeError(f"too many pytest-xdist workers for Redis' 16 databases ({worker})")
    return f"redis://127.0.0.1:6379/{database}"


REDIS_URL = os.environ.get("TEST_REDIS_URL", redis_test_url(0))
RABBITMQ_URL = os.environ.get("TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/")

#: SPEC.md's pipeline steps in order (written out here, not imported, so tests check the contract).
SPEC_STEP_ORDER = (
    "queued",
    "validating_exam",
    "processing_answers",
    "getting_ai_recommendations",
    "finalizing_results",
    "completed",
)

#: The status document's fields (SPEC.md, "HTTP API" and "Status document, extended").
STATUS_FIELDS = {
    "job_id",
    "exam_code",
    "student_id",
    "status",
    "progress",
    "current_step",
    "current_step_label",
    "attempts",
    "result",
    "error_message",
    "error_code",
    "created_at",
    "started_at",
    "completed_at",
    "status_url",
}

MATH_ANSWERS = {"q1": "b", "q2": ["a", "c"], "q3": 3.14, "q4": True, "q5": "photosynthesis"}


def json_lines(*texts: str) -> list[dict[str, Any]]:
    """The JSON log records in some process logs (plain lines, e.g. a traceback's, are skipped)."""
    records: list[dict[str, Any]] = []
    for text in texts:
        for line in text.splitlines():
            if line.startswith("{"):
                with contextlib.suppress(ValueError):
                    record = json.loads(line)
                    if isinstance(record, dict):
                        records.append(record)
    return records


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(url: str, timeout: float = 30.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Wait until ``url`` answers (any status), failing early if ``proc`` died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} answered")
        try:
            httpx.get(url, timeout=1.0)
        except httpx.HTTPError:
            time.sleep(0.1)
            continue
        return
    raise TimeoutError(f"{url} did not answer within {timeout} s")


def run_exams(args: list[str], env: Mapping[str, str], check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run one ``exams`` command to completion."""
    result = subprocess.run(
        [EXAMS, *args], env={**os.environ, **env}, capture_output=True, text=True, timeout=120, check=False
    )
    if check and result.returncode != 0:
        raise AssertionError(f"exams {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
    return result


class Process:
    """A long-running ``exams`` command (server, worker, fake AI) with its log file."""

    def __init__(self, args: list[str], env: Mapping[str, str], log_path: Path, health_url: str | None) -> None:
        self.args = args
        self.env = dict(env)
        self.log_path = log_path
        self.health_url = health_url
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, wait: bool = True) -> Self:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [EXAMS, *self.args], env={**os.environ, **self.env}, stdout=log, stderr=subprocess.STDOUT
        )
        if wait and self.health_url:
            try:
                wait_http(self.health_url, proc=self.proc)
            except Exception as exc:
                raise RuntimeError(f"{exc}\n--- log ---\n{self.log()[-4000:]}") from exc
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)

    def kill(self) -> None:
        self.stop(signal.SIGKILL)


class FakeAIProcess(Process):
    """``exams fake-ai`` on a free port, with its control endpoints."""

    def __init__(self, log_path: Path, latency: float = 0.2) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        super().__init__(
            ["fake-ai", "--port", str(self.port), "--latency", str(latency)],
            {"LOG_FORMAT": "json"},
            log_path,
            f"http://127.0.0.1:{self.port}/health",
        )
        self.latency = latency

    def set_mode(self, mode: str, times: int | None = None, latency: float | None = None) -> None:
        body: dict[str, Any] = {"mode": mode, "times": times}
        if latency is not None:
            body["latency"] = latency
        httpx.put(f"http://127.0.0.1:{self.port}/_fake/mode", json=body, timeout=5).raise_for_status()

    def reset(self) -> None:
        httpx.post(f"http://127.0.0.1:{self.port}/_fake/reset", timeout=5).raise_for_status()
        self.set_mode("ok", latency=self.latency)

    def requests(self) -> int:
        return int(httpx.get(f"http://127.0.0.1:{self.port}/_fake/stats", timeout=5).json()["requests"])


def base_env(database_url: str, fake_ai_url: str, **extra: str) -> dict[str, str]:
    """Environment for a test server: fast retries and short timeouts."""
    env = {
        "DATABASE_URL": database_url,
        "QUEUE_CONNECTION": "embedded",
        "AI_API_BASE_URL": fake_ai_url,
        "AI_API_KEY": "test-key-not-secret",
        "AI_API_TIMEOUT": "3",
        "JOB_MAX_RETRIES": "2",
        "JOB_RETRY_BACKOFF": "0.2",
        "JOB_STALE_AFTER": "6",
        "LOG_FORMAT": "json",
        "WORKER_THREADS": "8",
        # These tests drive AI failures to a failed job; the rule-based fallback (the product's
        # default) has tests of its own that set AI_FALLBACK=rule_based.
        "AI_FALLBACK": "fail",
        # What the production guard asks of `exams serve` on PostgreSQL or a real broker.
        "SECRET_KEY": "test-secret-key-not-secret-0123",
        "ADMIN_PASSWORD": "test-admin-password-not-secret",
    }
    env.update(extra)
    return env


class JobsAPI:
    """Submitting MATH-101 and following the job, over ``_request`` (a port or an in-process client)."""

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        raise NotImplementedError

    def submit(
        self, answers: Mapping[str, Any] | None = None, exam_code: str = "MATH-101", **headers: str
    ) -> httpx.Response:
        body = {"exam_code": exam_code, "student_id": "s-1042", "answers": dict(answers or MATH_ANSWERS)}
        return self._request("POST", "/api/exam-results/process", json=body, headers=headers)

    def submitted(self) -> str:
        """Submit MATH-101's sample answers; the new job's id (asserting the 202)."""
        response = self.submit()
        assert response.status_code == 202, response.text
        return str(response.json()["job_id"])

    def status(self, job_id: str, **params: str) -> dict[str, Any]:
        response = self._request("GET", f"/api/exam-results/status/{job_id}", params=params)
        response.raise_for_status()
        return dict(response.json())

    def wait_final(self, job_id: str, timeout: float = 60.0) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Poll until the job is final; return the final document and every document seen."""
        seen: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            doc = self.status(job_id)
            seen.append(doc)
            if doc["status"] in ("completed", "failed"):
                return doc, seen
            time.sleep(0.1)
        raise AssertionError(f"job {job_id} not final after {timeout} s: {seen[-1] if seen else None}")


class ExamsServer(JobsAPI, Process):
    """``exams serve`` on a free port, with a migrated database holding the sample catalog."""

    def __init__(self, env: Mapping[str, str], log_path: Path) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        super().__init__(["serve", "--port", str(self.port)], env, log_path, f"{self.base_url}/health")

    def prepare(self) -> ExamsServer:
        """Migrate its database and load the sample catalog (see :func:`prepare_database`)."""
        prepare_database(self.env["DATABASE_URL"])
        return self

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.request(method, f"{self.base_url}{path}", timeout=10, **kwargs)


#: Settings are built from a dict: never from the real environment, nor from a ``.env`` file
#: (``load_settings`` skips what is not a regular file).
NO_ENV_FILE = Path(os.devnull)


def app_settings(database_url: str, fake_ai_url: str, **extra: str) -> Settings:
    """The settings of ``base_env`` (environment spelling for ``extra``), as ``exams serve`` reads them."""
    from core.settings import load_settings

    return load_settings(base_env(database_url, fake_ai_url, **extra), env_file=NO_ENV_FILE)


def prepare_database(target: Settings | str) -> None:
    """What ``exams migrate`` and ``exams catalog load`` of the sample catalog do, in this process
    (as subprocesses they cost seconds of interpreter start-up each on a busy machine), for the
    database of ``target``: settings, or a ``DATABASE_URL``."""
    from core.settings import load_settings
    from server.migrate import run_migrations

    settings = load_settings({"DATABASE_URL": target}, env_file=NO_ENV_FILE) if isinstance(target, str) else target

    def prepare() -> None:
        run_migrations(settings)
        asyncio.run(_load_sample_catalog(settings))

    # In a thread of its own: the browser tests' Playwright keeps an event loop running here.
    with ThreadPoolExecutor(1) as pool:
        pool.submit(prepare).result()


async def _load_sample_catalog(settings: Settings) -> None:
    from core.db import Database
    from exams.catalog import load_catalog_file
    from exams.services import ExamService

    database = Database.from_settings(settings)
    try:
        async with database.transaction() as session:
            await ExamService(session=session).load(load_catalog_file(SAMPLE_CATALOG))
    finally:
        await database.dispose()


class ExamsApp(JobsAPI):
    """``server.app.create_app(settings)`` served in this process by Litestar's ``TestClient``.

    The interface of :class:`ExamsServer` (``submit``, ``submitted``, ``status``, ``wait_final``,
    ``log``); ``http`` is the test client, used where a test would call ``httpx`` on a port. The
    lifespan runs in the client's portal thread, so with ``QUEUE_CONNECTION=embedded`` the
    in-process Dramatiq worker runs submitted jobs to completion in this process.

    One app runs at a time: Dramatiq keeps one AsyncIO event-loop thread per process (a global
    its ``AsyncIO`` middleware sets at worker boot and clears at worker shutdown), so a second
    embedded worker would take the first one's loop and, stopping, leave it none. Starting an
    app stops the running one; a shared app is started again by its next user (its database
    keeps its jobs, and the embedded start-up sends unfinished ones again).
    """

    _running: ClassVar[ExamsApp | None] = None

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._client: TestClient[Litestar] | None = None
        self._log = io.StringIO()
        self._log_handler: logging.Handler | None = None
        self._excepthook: Any = None

    @property
    def database_url(self) -> str:
        return self.settings.database_url

    @property
    def running(self) -> bool:
        return self._client is not None

    @property
    def http(self) -> TestClient[Litestar]:
        """The test client of the running app (requests take paths: ``app.http.get("/health")``)."""
        if self._client is None:
            raise RuntimeError("this app is not running (another app was started since?): call start()")
        return self._client

    def prepare(self) -> ExamsApp:
        """Migrate the database and load the sample catalog (see :func:`prepare_database`)."""
        prepare_database(self.settings)
        return self

    def start(self) -> ExamsApp:
        """Build the app and run its lifespan (stopping any other running app first)."""
        if self._client is not None:
            return self
        if ExamsApp._running is not None:
            ExamsApp._running.stop()
        from litestar.testing import TestClient

        from server.app import create_app

        app = create_app(self.settings)  # configures logging: the root logger's JSON handler
        self._capture_log()
        client = TestClient(app)
        try:
            client.__enter__()
        except BaseException:
            self._release_log()
            raise
        self._client = client
        ExamsApp._running = self
        return self

    def stop(self) -> None:
        """Run the lifespan's shutdown (the embedded worker stops); the database stays."""
        client, self._client = self._client, None
        if ExamsApp._running is self:
            ExamsApp._running = None
        if client is None:
            return
        try:
            client.__exit__(None, None, None)
        finally:
            self._release_log()

    def log(self) -> str:
        """What the app logged while running (rendered as the process would write it), and any
        exception that ended one of its threads."""
        return self._log.getvalue()

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return self.http.request(method, path, **kwargs)

    def _capture_log(self) -> None:
        root = logging.getLogger()
        handler = logging.StreamHandler(self._log)
        handler.setFormatter(next((h.formatter for h in root.handlers if h.formatter is not None), None))
        root.addHandler(handler)
        self._log_handler = handler
        previous = self._excepthook = threading.excepthook

        def excepthook(args: threading.ExceptHookArgs) -> None:
            with handler.lock or contextlib.nullcontext():
                self._log.write("".join(traceback.format_exception(args.exc_type, args.exc_value, args.exc_traceback)))
            previous(args)

        threading.excepthook = excepthook

    def _release_log(self) -> None:
        if self._log_handler is not None:
            logging.getLogger().removeHandler(self._log_handler)
            self._log_handler = None
        if self._excepthook is not None:
            threading.excepthook = self._excepthook
            self._excepthook = None


T = TypeVar("T")


def run_in_transaction(settings: Settings, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
    """``work(session)`` in one committed transaction on ``settings``' database, from sync code."""
    from core.db import Database

    async def go() -> T:
        database = Database.from_settings(settings)
        try:
            async with database.transaction() as session:
                return await work(session)
        finally:
            await database.dispose()

    return asyncio.run(go())


async def delete_redis_keys(prefix: str) -> None:
    """Remove every key under ``prefix:`` from the tests' Redis database."""
    from redis.asyncio import Redis

    client = Redis.from_url(REDIS_URL)
    keys = [key async for key in client.scan_iter(f"{prefix}:*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


def sqlite_url(tmp: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp / f'exams-{uuid.uuid4().hex[:8]}.db'}"


async def _pg_admin(statement: str) -> None:
    import asyncpg  # type: ignore[import-untyped]

    conn = await asyncpg.connect(PG_ADMIN_URL, timeout=5)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


@contextmanager
def postgres_database() -> Iterator[str]:
    """A fresh PostgreSQL database for one test run, dropped afterwards.

    Raises (never skips) when PostgreSQL is not reachable: CI requires it.
    """
    import asyncio

    name = f"exams_test_{uuid.uuid4().hex[:10]}"
    asyncio.run(_pg_admin(f'CREATE DATABASE "{name}"'))
    base = PG_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)
    try:
        yield f"{base}/{name}"
    finally:
        asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
