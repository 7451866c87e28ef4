"""Fixtures shared by every test folder: a real fake-AI process, real servers, real databases.

API tests use the app in process (``make_app``, ``app_session``: ``create_app`` behind Litestar's
``TestClient``, embedded worker included); ``make_server``/``server_session`` start real
``exams serve`` processes for the tests whose point is the process.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from support import ExamsApp, ExamsServer, FakeAIProcess, app_settings, base_env, postgres_database, sqlite_url


@pytest.fixture(scope="session")
def fake_ai_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeAIProcess]:
    """``exams fake-ai`` running on a free port for the whole session (0.2 s latency)."""
    proc = FakeAIProcess(tmp_path_factory.mktemp("fake-ai") / "fake-ai.log").start()
    yield proc
    proc.stop()


@pytest.fixture
def fake_ai_http(fake_ai_process: FakeAIProcess) -> Iterator[FakeAIProcess]:
    """The session's fake AI, reset to answering normally with zeroed stats (and reset again
    afterwards: the next test may use the session's fake AI without this fixture)."""
    fake_ai_process.reset()
    yield fake_ai_process
    fake_ai_process.reset()


@pytest.fixture
def slow_ai(fake_ai_http: FakeAIProcess) -> Iterator[FakeAIProcess]:
    """The fake AI answering after 1.5 s (a job is seen in several states), reset afterwards."""
    fake_ai_http.set_mode("ok", latency=1.5)
    yield fake_ai_http
    fake_ai_http.reset()


@pytest.fixture
def make_server(tmp_path: Path, fake_ai_http: FakeAIProcess) -> Iterator[Callable[..., ExamsServer]]:
    """Build ``exams serve`` processes on a fresh SQLite file (override env with keyword args)."""
    servers: list[ExamsServer] = []
    database_url = sqlite_url(tmp_path)

    def make(start: bool = True, **env: str) -> ExamsServer:
        server = ExamsServer(base_env(database_url, fake_ai_http.base_url, **env), tmp_path / "server.log")
        server.prepare()
        servers.append(server)
        return server.start() if start else server

    yield make
    for server in servers:
        server.stop()


@pytest.fixture(scope="session")
def server_session(tmp_path_factory: pytest.TempPathFactory, fake_ai_process: FakeAIProcess) -> Iterator[ExamsServer]:
    """One embedded-mode server shared by read-mostly API tests (do not change the fake AI's mode)."""
    tmp = tmp_path_factory.mktemp("server")
    server = ExamsServer(base_env(sqlite_url(tmp), fake_ai_process.base_url), tmp / "server.log").prepare().start()
    yield server
    server.stop()


@pytest.fixture
def make_app(tmp_path: Path, fake_ai_http: FakeAIProcess) -> Iterator[Callable[..., ExamsApp]]:
    """Build apps in process on a fresh SQLite file (override settings with keyword args, spelt as
    in the environment: ``make_app(JOB_MAX_RETRIES="0")``); stopped afterwards.

    ``prepare=False`` skips the migration and the catalog (a database that cannot be reached).
    """
    apps: list[ExamsApp] = []
    database_url = sqlite_url(tmp_path)

    def make(start: bool = True, prepare: bool = True, **env: str) -> ExamsApp:
        app = ExamsApp(app_settings(database_url, fake_ai_http.base_url, **env))
        apps.append(app)
        if prepare:
            app.prepare()
        return app.start() if start else app

    yield make
    for app in apps:
        app.stop()


@pytest.fixture(scope="session")
def shared_app(tmp_path_factory: pytest.TempPathFactory, fake_ai_process: FakeAIProcess) -> Iterator[ExamsApp]:
    """The app behind ``app_session``: its SQLite database is migrated and loaded once."""
    app = ExamsApp(app_settings(sqlite_url(tmp_path_factory.mktemp("app")), fake_ai_process.base_url)).prepare()
    yield app
    app.stop()


@pytest.fixture
def app_session(shared_app: ExamsApp) -> ExamsApp:
    """One embedded-mode app in process shared by read-mostly API tests (do not change the fake AI's mode).

    Only one app runs at a time (see ``ExamsApp``): this one is started again after a test's own.
    """
    return shared_app.start()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def app_each_database(request: pytest.FixtureRequest) -> ExamsApp:
    """The test once on the shared SQLite app, once on an app on a fresh PostgreSQL database
    (the fake AI answering normally either way)."""
    request.getfixturevalue("fake_ai_http")
    if request.param == "sqlite":
        shared: ExamsApp = request.getfixturevalue("app_session")
        return shared
    database_url = request.getfixturevalue("pg_url")  # set up first, so dropped after the app stopped
    make_app: Callable[..., ExamsApp] = request.getfixturevalue("make_app")
    return make_app(DATABASE_URL=database_url)


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database (required: fails when PostgreSQL is down)."""
    with postgres_database() as url:
        yield url
