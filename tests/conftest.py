"""Fixtures shared by every test folder: a real fake-AI process, real servers, real databases."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from support import ExamsServer, FakeAIProcess, base_env, postgres_database, sqlite_url


@pytest.fixture(scope="session")
def fake_ai_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeAIProcess]:
    """``exams fake-ai`` running on a free port for the whole session (0.2 s latency)."""
    proc = FakeAIProcess(tmp_path_factory.mktemp("fake-ai") / "fake-ai.log").start()
    yield proc
    proc.stop()


@pytest.fixture
def fake_ai_http(fake_ai_process: FakeAIProcess) -> FakeAIProcess:
    """The session's fake AI, reset to answering normally with zeroed stats."""
    fake_ai_process.reset()
    return fake_ai_process


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
def pg_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database (required: fails when PostgreSQL is down)."""
    with postgres_database() as url:
        yield url
