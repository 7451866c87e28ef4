"""The scheduler's liveness gauge (``exams_scheduler_last_run_timestamp_seconds``, alert
``ExamSchedulerDown``): set by every pass a leader completes, never by a standby or a failed pass."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from core.db import Database
from core.settings import Settings, load_settings
from jobs import maintenance
from jobs.maintenance import run_scheduler
from server.migrate import run_migrations
from support import NO_ENV_FILE, ExamsApp, sqlite_url

GAUGE = "exams_scheduler_last_run_timestamp_seconds"


def last_run() -> float:
    value = REGISTRY.get_sample_value(GAUGE)
    assert value is not None, f"{GAUGE} is not registered"
    return value


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """A migrated SQLite database (the gauge does not depend on the backend)."""
    migrated = load_settings({"DATABASE_URL": sqlite_url(tmp_path)}, env_file=NO_ENV_FILE)
    run_migrations(migrated)
    return migrated


@pytest.fixture(autouse=True)
def never_ran() -> None:
    """The gauge at 0, and no app of an earlier test running its own scheduler in this process
    (a shared app is started again by its next user)."""
    from core.metrics import SCHEDULER_LAST_RUN

    if ExamsApp._running is not None:
        ExamsApp._running.stop()
    SCHEDULER_LAST_RUN.set(0)


class Standby:
    """A leader lock held by another scheduler."""

    async def ensure(self) -> bool:
        return False

    async def release(self) -> None:
        return None


async def run_for(seconds: float, database: Database, settings: Settings, **kwargs: object) -> None:
    task = asyncio.create_task(run_scheduler(database, None, settings, reconcile_every=0.05, **kwargs))  # type: ignore[arg-type]
    await asyncio.sleep(seconds)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_a_completed_pass_sets_the_gauge_to_now(db: Database, settings: Settings) -> None:
    before = time.time()
    await run_for(0.5, db, settings)
    assert before <= last_run() <= time.time()


async def test_a_standby_scheduler_leaves_the_gauge_alone(db: Database, settings: Settings) -> None:
    await run_for(0.3, db, settings, lock=Standby())
    assert last_run() == 0


class LogRecorder:
    """Stands in for the scheduler's logger: the events, unrendered (a pretty traceback is slow)."""

    def __init__(self) -> None:
        self.events: list[str] = []

    def info(self, event: str, **_: object) -> None:
        self.events.append(event)

    def exception(self, event: str, **_: object) -> None:
        self.events.append(event)


async def test_a_failing_pass_leaves_the_gauge_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    recorder = LogRecorder()
    monkeypatch.setattr(maintenance, "log", recorder)
    # A database that was never migrated: every cleanup pass fails (and is logged).
    broken = load_settings({"DATABASE_URL": sqlite_url(tmp_path)}, env_file=NO_ENV_FILE)
    database = Database.from_settings(broken)
    try:
        await run_for(0.3, database, broken)
    finally:
        await database.dispose()
    assert last_run() == 0
    assert "scheduler pass failed" in recorder.events
