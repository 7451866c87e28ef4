"""Alembic environment: runs migrations on the engine advanced-alchemy's config hands over.

Every model of the product is imported here, so ``alembic check`` and autogenerate compare
the whole schema (not one package's tables).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, cast

from advanced_alchemy.base import orm_registry
from advanced_alchemy.types import GUID
from alembic import context
from sqlalchemy.ext.asyncio import AsyncEngine

import access.models  # noqa: F401
import admin.models  # noqa: F401
import core.audit  # noqa: F401
import exams.models  # noqa: F401
import jobs.ai_guard
import jobs.models  # noqa: F401  (each import registers its tables on the shared metadata)

if TYPE_CHECKING:
    from advanced_alchemy.alembic.commands import AlembicCommandConfig
    from sqlalchemy.engine import Connection

config = cast("AlembicCommandConfig", context.config)
target_metadata = orm_registry.metadata


def compare_type(
    _context: Any, _inspected: Any, _metadata_column: Any, _inspected_type: Any, metadata_type: Any
) -> bool | None:
    """Ignore the storage type GUID reflects as (BINARY/NUMERIC on SQLite, UUID on PostgreSQL)."""
    if isinstance(metadata_type, GUID):
        return False
    return None


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        compare_type=compare_type,
        version_table=config.version_table_name,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_online() -> None:
    engine = cast("AsyncEngine", config.engine)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_configure)
    finally:
        await engine.dispose()


if context.is_offline_mode():
    context.configure(url=config.db_url, target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(_run_online())
