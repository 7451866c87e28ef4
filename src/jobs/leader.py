"""One active scheduler at a time: a PostgreSQL advisory lock, or a file lock beside a SQLite file.

A second ``exams scheduler`` started by mistake (or for redundancy on another host) stays on
standby and takes over when the leader's lock goes away (its process or connection died).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from typing import IO

from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

__all__ = ("LeaderLock",)

#: Arbitrary constant naming the scheduler's advisory lock.
ADVISORY_KEY = 0x45_58_41_4D  # "EXAM"


class LeaderLock:
    """Non-blocking leadership: :meth:`ensure` says whether this process leads right now."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._conn: AsyncConnection | None = None
        self._file: IO[str] | None = None

    async def ensure(self) -> bool:
        """Keep or try to take the lock; ``True`` when this process is the leader."""
        if self.engine.dialect.name == "sqlite":
            return self._ensure_file()
        return await self._ensure_advisory()

    def _ensure_file(self) -> bool:
        if self._file is not None:
            return True
        database = make_url(str(self.engine.url)).database or "exams.db"
        path = Path(f"{database}.scheduler.lock") if database != ":memory:" else Path("exams-scheduler.lock")
        handle = path.open("a+")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return False
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self._file = handle
        return True

    async def _ensure_advisory(self) -> bool:
        if self._conn is not None:
            try:
                await self._conn.execute(text("SELECT 1"))
            except Exception:  # noqa: BLE001  (connection lost: so is the lock)
                await self._drop()
            else:
                return True
        conn = await self.engine.connect()
        try:
            got = (await conn.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": ADVISORY_KEY})).scalar()
            await conn.commit()
        except Exception:
            await conn.close()
            raise
        if got:
            self._conn = conn
            return True
        await conn.close()
        return False

    async def _drop(self) -> None:
        if self._conn is not None:
            # The connection is usually already broken here; closing is best effort.
            with contextlib.suppress(Exception):
                await self._conn.close()
            self._conn = None

    async def release(self) -> None:
        """Give the lock up (closing the connection or file releases it)."""
        await self._drop()
        if self._file is not None:
            self._file.close()
            self._file = None
