"""Fixtures of the jobs tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from production_support import Stack

from core.db import Database
from core.settings import Settings, load_settings
from server.migrate import run_migrations
from support import NO_ENV_FILE, sqlite_url


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    """Production-mode processes (PostgreSQL, Redis, workers, web, scheduler), all stopped afterwards."""
    with Stack(tmp_path) as running:
        yield running


@pytest.fixture(params=["sqlite", "postgresql"])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    """Settings for a fresh, migrated database of each backend (migrated outside the event loop;
    PostgreSQL is required: a missing server fails the test)."""
    url = sqlite_url(tmp_path) if request.param == "sqlite" else request.getfixturevalue("pg_url")
    migrated = load_settings({"DATABASE_URL": url}, env_file=NO_ENV_FILE)
    run_migrations(migrated)
    return migrated


@pytest.fixture
async def db(settings: Settings) -> AsyncIterator[Database]:
    """The test's database (the module's own ``settings`` fixture wins where it has one)."""
    database = Database.from_settings(settings)
    yield database
    await database.dispose()
