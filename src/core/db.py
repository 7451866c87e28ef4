"""Database engines and sessions for SQLite (embedded) and PostgreSQL (production).

:class:`Database` is what every part of the product is handed (by the composition root in
``server``): one engine, its session factory and an autocommit reader. SQLAlchemy's async
connections belong to the event loop that opened them, so each event loop (the web app's, the
embedded worker's, a heartbeat thread's) gets its own :class:`Database`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from core.settings import Settings

__all__ = ("Database", "create_engine")


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets the web app read while the worker writes; busy_timeout makes a writer wait
    # for the other instead of failing with "database is locked".
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=15000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def create_engine(
    settings: Settings, *, statement_timeout: float | None = 30.0, pool_timeout: float = 5.0
) -> AsyncEngine:
    """Create the async engine for ``DATABASE_URL`` (one per process and event loop).

    ``statement_timeout``: seconds one PostgreSQL statement may run (``None``: no limit, for
    migrations, whose backfills and index builds grow with the tables). ``pool_timeout``: seconds
    a caller waits for a pooled PostgreSQL connection (a web request answers 503 soon; a worker's
    job would rather wait its turn).
    """
    url = make_url(settings.database_url)
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:":
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, connect_args={"timeout": 15})
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    # No pre-ping (a round trip per checkout): a connection broken by a database restart fails
    # once, and SQLAlchemy then discards the whole pool.
    return create_async_engine(
        url,
        pool_recycle=1800,
        # Sized so that a busy process reuses connections instead of opening overflow ones per
        # request (each costs a TCP and TLS handshake). Mind PostgreSQL's max_connections
        # (100 by default) when adding web workers and worker processes.
        pool_size=20,
        max_overflow=10,
        pool_timeout=pool_timeout,
        connect_args={"timeout": 5, "command_timeout": statement_timeout},
    )


class Database:
    """One engine, its session factory and an autocommit reader, for one event loop."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        # advanced-alchemy's file-object listener (installed process-wide by its config) checks this
        # key first: no model stores files, so it skips every flush at once.
        self.sessions = async_sessionmaker(engine, expire_on_commit=False, info={"enable_file_object_listener": False})
        #: Reads outside a transaction: one round trip per lookup (no BEGIN/COMMIT), for hot reads.
        self.reader = engine.execution_options(isolation_level="AUTOCOMMIT")

    @classmethod
    def from_settings(cls, settings: Settings, *, pool_timeout: float = 5.0) -> Database:
        """A new engine for ``DATABASE_URL``."""
        return cls(create_engine(settings, pool_timeout=pool_timeout))

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """A session that commits on success and rolls back on error (workers, CLI, scheduler)."""
        async with self.sessions() as session:
            try:
                yield session
                await session.commit()
            except BaseException:
                await session.rollback()
                raise

    async def dispose(self) -> None:
        """Close every pooled connection."""
        await self.engine.dispose()
