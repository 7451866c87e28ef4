"""Every migration has a working downgrade: a release can be rolled back (docs/deployment.md).

On real SQLite and PostgreSQL databases, for whatever revisions exist when the test runs:
upgrading one revision at a time and then downgrading one at a time passes through exactly the
same schemas, with jobs in the tables that survive every step
(`exams migrate --to REVISION`, the command the rollback plan uses runs ``migrate_to``).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection

from core.db import create_engine
from core.settings import Settings, load_settings
from server.migrate import alembic_commands, migrate_to, schema_revisions
from support import MATH_ANSWERS, NO_ENV_FILE, sqlite_url


@pytest.fixture(params=["sqlite", "postgresql"])
def empty(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    """Settings of a fresh, empty database of each backend."""
    url = sqlite_url(tmp_path) if request.param == "sqlite" else request.getfixturevalue("pg_url")
    return load_settings({"DATABASE_URL": url}, env_file=NO_ENV_FILE)


def revisions(settings: Settings) -> list[str]:
    """Every revision id, oldest first."""
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(alembic_commands(settings).config)
    return [rev.revision for rev in reversed(list(script.walk_revisions()))]


def _describe(sync: Connection) -> dict[str, Any]:
    inspector = inspect(sync)
    schema: dict[str, Any] = {}
    for table in sorted(inspector.get_table_names()):
        if table == "alembic_version":
            continue
        schema[table] = {
            "columns": sorted(
                (c["name"], str(c["type"]).split("(")[0], c["nullable"]) for c in inspector.get_columns(table)
            ),
            "primary_key": sorted(inspector.get_pk_constraint(table)["constrained_columns"]),
            "indexes": sorted(
                (i["name"], tuple(i["column_names"]), bool(i["unique"])) for i in inspector.get_indexes(table)
            ),
            "foreign_keys": sorted(
                (tuple(f["constrained_columns"]), f["referred_table"]) for f in inspector.get_foreign_keys(table)
            ),
            "checks": sorted(str(c["name"]) for c in inspector.get_check_constraints(table)),
        }
    return schema


def schema_of(settings: Settings) -> dict[str, Any]:
    async def read() -> dict[str, Any]:
        engine = create_engine(settings)
        try:
            async with engine.connect() as connection:
                return await connection.run_sync(_describe)
        finally:
            await engine.dispose()

    return asyncio.run(read())


def _seed_jobs(settings: Settings) -> None:
    """The sample catalog and two jobs: one pending, one cancelled (a state older schemas lack)."""
    from core.db import Database
    from exams.catalog import SAMPLE_CATALOG_PATH, load_catalog_file
    from exams.services import ExamService
    from jobs.services import JobService, Submission

    async def seed() -> None:
        database = Database.from_settings(settings)
        try:
            async with database.transaction() as session:
                await ExamService(session=session).load(load_catalog_file(SAMPLE_CATALOG_PATH))
            async with database.transaction() as session:
                for student in ("s-1", "s-2"):
                    submission = Submission(exam_code="MATH-101", student_id=student, answers=dict(MATH_ANSWERS))
                    await JobService(session=session).submit(submission)
            async with database.transaction() as session:
                await session.execute(
                    text(
                        "UPDATE exam_processing_jobs SET status = 'cancelled', current_step = 'cancelled'"
                        " WHERE student_id = 's-2'"
                    )
                )
        finally:
            await database.dispose()

    asyncio.run(seed())


def _jobs_by_status(settings: Settings) -> dict[str, int]:
    async def count() -> dict[str, int]:
        engine = create_engine(settings)
        try:
            async with engine.connect() as connection:
                rows = await connection.execute(
                    text("SELECT status, count(*) FROM exam_processing_jobs GROUP BY status")
                )
                return {str(status): int(n) for status, n in rows.all()}
        finally:
            await engine.dispose()

    return asyncio.run(count())


def test_every_release_rolls_back_to_the_schema_before_it_and_keeps_the_jobs(empty: Settings) -> None:
    ids = revisions(empty)
    assert len(ids) >= 2, ids
    # Forward one revision at a time from an empty database, noting each schema.
    seen: dict[str | None, dict[str, Any]] = {None: schema_of(empty)}
    for rev in ids:
        migrate_to(empty, rev)
        seen[rev] = schema_of(empty)
    assert seen[None] == {}
    _seed_jobs(empty)
    assert _jobs_by_status(empty) == {"pending": 1, "cancelled": 1}
    # Back one revision at a time, jobs in the tables: each downgrade restores the schema before
    # its upgrade, and no job is lost.
    for previous in reversed(ids[:-1]):
        before, after = migrate_to(empty, previous)
        assert after == previous, (before, after)
        assert schema_of(empty) == seen[previous], f"rolling back {before} left another schema than {previous}'s"
        assert sum(_jobs_by_status(empty).values()) == 2, f"jobs lost rolling back to {previous}"
    # The first schemas had no cancelled state: rolling back past it made the job a failed one.
    assert _jobs_by_status(empty) == {"pending": 1, "failed": 1}
    # Forward again to the latest: the models' schema exactly, the jobs still there.
    migrate_to(empty, "head")
    assert schema_revisions(empty) == (ids[-1], ids[-1])
    assert _jobs_by_status(empty) == {"pending": 1, "failed": 1}
    alembic_commands(empty).check()
    # And all the way back: nothing of the product's schema is left behind.
    migrate_to(empty, "base")
    assert schema_of(empty) == {}


def test_exams_migrate_moves_the_schema_to_a_revision_and_back(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from server.cli import main

    env = {"DATABASE_URL": sqlite_url(tmp_path)}
    settings = load_settings(env, env_file=NO_ENV_FILE)
    ids = revisions(settings)

    def exams(*args: str) -> tuple[int, str, str]:
        result = CliRunner().invoke(main, ["migrate", *args], env=env)
        return result.exit_code, result.stdout, result.stderr

    assert exams("--current") == (0, f"database schema: empty; latest: {ids[-1]}\n", "")
    assert exams()[:2] == (0, "database is at the latest schema\n")
    assert exams("--to", ids[-2])[:2] == (0, f"database schema moved from {ids[-1]} to {ids[-2]}\n")
    assert schema_revisions(settings) == (ids[-2], ids[-1])
    assert exams("--current")[1] == f"database schema: {ids[-2]}; latest: {ids[-1]}\n"
    assert exams("--to", ids[-2])[1] == f"database schema is already at {ids[-2]}\n"
    code, out, err = exams("--to", "no-such-revision")
    assert (code, out) == (2, "")
    assert err.startswith("exams: cannot migrate to no-such-revision: ")
    assert err.count("\n") == 1
    assert exams("--to", "head")[1] == f"database schema moved from {ids[-2]} to {ids[-1]}\n"
