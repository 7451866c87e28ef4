"""Alembic environment: runs migrations on the async engine of ``DATABASE_URL``."""

from __future__ import annotations

import asyncio
from typing import Any

from advanced_alchemy.base import orm_registry
from advanced_alchemy.types import GUID
from alembic import context
from sqlalchemy import pool
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

import jobs.models  # noqa: F401  (registers the tables on the shared metadata)

config = context.config
target_metadata = orm_registry.metadata


def _database_url() -> str:
    url = config.attributes.get("database_url")
    if url:
        return str(url)
    from core.settings import get_settings

    return get_settings().database_url


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
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_online() -> None:
    engine = create_async_engine(_database_url(), poolclass=pool.NullPool)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_configure)
    finally:
        await engine.dispose()


if context.is_offline_mode():
    context.configure(url=_database_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(_run_online())
