"""Fixtures of the jobs tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from production_support import Stack

from ai_client import AIClient
from core.db import Database
from core.settings import Settings, load_settings
from exams.catalog import load_catalog_file
from exams.services import ExamService
from jobs.pipeline import PipelineRuntime
from server.migrate import run_migrations
from support import NO_ENV_FILE, SAMPLE_CATALOG, FakeAIProcess, sqlite_url


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


@pytest.fixture
def db_settings(request: pytest.FixtureRequest, tmp_path: Path, fake_ai_http: FakeAIProcess) -> Settings:
    """Settings of the in-process pipeline tests: a migrated SQLite database, the fake AI, fast
    retries (``JOB_MAX_RETRIES`` from the module's ``PIPELINE_MAX_RETRIES``, else 2). They drive AI
    failures to a failed job; the rule-based fallback (the default) is tested in
    test_ai_protection.py."""
    settings = load_settings(
        {
            "DATABASE_URL": sqlite_url(tmp_path),
            "AI_API_BASE_URL": fake_ai_http.base_url,
            "AI_API_TIMEOUT": "5",
            "JOB_MAX_RETRIES": getattr(request.module, "PIPELINE_MAX_RETRIES", "2"),
            "JOB_RETRY_BACKOFF": "0.2",
            "AI_FALLBACK": "fail",
        },
        env_file=tmp_path / "no.env",
    )
    run_migrations(settings)
    return settings


@pytest.fixture
async def runtime(db_settings: Settings, fake_ai_http: FakeAIProcess) -> AsyncIterator[PipelineRuntime]:
    """What ``run_job`` runs with, on the sample catalog."""
    database = Database.from_settings(db_settings)
    async with database.transaction() as session:
        await ExamService(session=session).load(load_catalog_file(SAMPLE_CATALOG))
    ai = AIClient(base_url=fake_ai_http.base_url, api_key="test-key", model="test", timeout=db_settings.ai_api_timeout)
    yield PipelineRuntime(settings=db_settings, database=database, ai=ai)
    await ai.aclose()
    await database.dispose()
