"""Fixtures of the API-access tests (helpers in ``access_support``).

SQLite databases are copies of one migrated database holding the sample catalog (migrating
SQLite costs seconds); PostgreSQL ones are fresh databases, migrated.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from access_support import NO_AI, TokensApp

from support import ExamsApp, app_settings, postgres_database, sqlite_url


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One SQLite file migrated to head with the sample catalog, copied by :func:`fresh_sqlite`."""
    url = sqlite_url(tmp_path_factory.mktemp("access-template"))
    ExamsApp(app_settings(url, NO_AI)).prepare()
    return Path(url.split("///", 1)[1])


@pytest.fixture(scope="session")
def fresh_sqlite(sqlite_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Callable[[], str]:
    """Make a new SQLite database (a copy of the template); its URL."""

    def make() -> str:
        target = tmp_path_factory.mktemp("access-db") / f"exams-{uuid.uuid4().hex[:8]}.db"
        shutil.copyfile(sqlite_template, target)
        return f"sqlite+aiosqlite:///{target}"

    return make


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def tokens_app_each_database(request: pytest.FixtureRequest, fresh_sqlite: Callable[[], str]) -> Iterator[TokensApp]:
    """A tokens app per database, shared by a module's tests (PostgreSQL is required: never skipped)."""
    if request.param == "sqlite":
        made = TokensApp(fresh_sqlite())
        yield made
        made.app.stop()
        return
    with postgres_database() as url:
        made = TokensApp(url, prepare=True)
        yield made
        made.app.stop()


@pytest.fixture(scope="module")
def tokens_app(fresh_sqlite: Callable[[], str]) -> Iterator[TokensApp]:
    """A tokens app on SQLite shared by a module's tests."""
    made = TokensApp(fresh_sqlite())
    yield made
    made.app.stop()


@pytest.fixture(scope="module")
def off_app(fresh_sqlite: Callable[[], str]) -> Iterator[ExamsApp]:
    """An app with ``API_AUTH=off`` (the default) on SQLite, shared by a module's tests (call ``start()``)."""
    app = ExamsApp(app_settings(fresh_sqlite(), NO_AI, AI_API_ENABLED="false"))
    yield app
    app.stop()
