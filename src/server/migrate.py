"""Database migrations through advanced-alchemy's Alembic configuration.

The same :class:`SQLAlchemyAsyncConfig` serves the web app's SQLAlchemy plugin and Alembic
(``exams migrate``, the schema check of ``exams serve``, and the tests' ``check`` for pending
model changes). ``migrations/env.py`` registers every model of the product.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import cast

from advanced_alchemy.alembic.commands import AlembicCommands
from advanced_alchemy.extensions.litestar import AlembicAsyncConfig, AsyncSessionConfig, SQLAlchemyAsyncConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.ext.asyncio import AsyncEngine

from core.db import create_engine
from core.settings import Settings

__all__ = (
    "MIGRATIONS_DIR",
    "alchemy_config",
    "alembic_commands",
    "migrate_to",
    "run_migrations",
    "schema_revisions",
)

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def alchemy_config(settings: Settings, engine: AsyncEngine) -> SQLAlchemyAsyncConfig:
    """advanced-alchemy's config around ``engine``: the Litestar plugin's sessions and Alembic's."""
    return SQLAlchemyAsyncConfig(
        engine_instance=engine,
        before_send_handler="autocommit",
        session_config=AsyncSessionConfig(expire_on_commit=False),
        # No model has a FileObject column: its before-flush listener would inspect every row of
        # every flush for nothing (a tenth of the submit route's CPU in a py-spy profile).
        enable_file_object_listener=False,
        alembic_config=AlembicAsyncConfig(
            script_location=str(MIGRATIONS_DIR),
            version_table_name="alembic_version",
            render_as_batch=settings.is_sqlite,
            compare_type=True,
        ),
    )


def alembic_commands(settings: Settings) -> AlembicCommands:
    """Alembic's commands (``upgrade``, ``check``, ``revision`` …) for ``DATABASE_URL``."""
    # No statement time limit: a backfill or an index build grows with the tables it migrates.
    return AlembicCommands(sqlalchemy_config=alchemy_config(settings, create_engine(settings, statement_timeout=None)))


def run_migrations(settings: Settings, revision: str = "head") -> None:
    """Upgrade the database to ``revision`` (blocking; call outside a running event loop)."""
    alembic_commands(settings).upgrade(revision)


def schema_revisions(settings: Settings) -> tuple[str | None, str]:
    """The database's current Alembic revision (``None`` when never migrated) and the code's head."""
    commands = alembic_commands(settings)
    head = ScriptDirectory.from_config(commands.config).get_current_head() or ""
    engine = cast("AsyncEngine", commands.config.engine)

    async def current() -> str | None:
        # A read, not a migration: Alembic's "Context impl …" lines would only be noise here.
        logging.getLogger("alembic.runtime.migration").setLevel(logging.WARNING)
        try:
            async with engine.connect() as conn:
                return await conn.run_sync(lambda sync: MigrationContext.configure(sync).get_current_revision())
        finally:
            await engine.dispose()

    return asyncio.run(current()), head


def migrate_to(settings: Settings, revision: str) -> tuple[str | None, str | None]:
    """Move the database to ``revision`` (an id, ``head`` or ``base``): upgrade when the database is
    behind it, run the downgrades when it is ahead (rolling a release back). Returns the revisions
    before and after (``None``: an empty schema). An unknown revision raises Alembic's
    ``CommandError`` before anything changes.
    """
    current, _head = schema_revisions(settings)
    commands = alembic_commands(settings)
    script = ScriptDirectory.from_config(commands.config)
    target = script.get_revision(revision)  # resolves head/base; raises on an unknown id
    target_id = target.revision if target is not None else None
    below = {rev.revision for rev in script.iterate_revisions(current, "base")} if current else set()
    if target_id == current:
        return current, current
    if target_id is None or target_id in below:
        commands.downgrade(target_id or "base")
    else:
        commands.upgrade(target_id)
    return current, schema_revisions(settings)[0]
