"""Errors of services that are away, made the way their libraries make them (``core.retry``'s
tests and the pipeline's outage tests share them; imported by name: ``tests`` is on ``sys.path``)."""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy.dialects.postgresql.asyncpg import AsyncAdapt_asyncpg_connection, AsyncAdapt_asyncpg_dbapi
from sqlalchemy.exc import DBAPIError

from support import free_port

__all__ = ("StartingPostgres", "raised", "raised_async", "through_sqlalchemy_adapter")


class StartingPostgres:
    """A TCP server answering every connection as a PostgreSQL that is still starting up does:
    an ``ErrorResponse`` with SQLSTATE ``57P03`` (``CannotConnectNowError`` in asyncpg)."""

    def __init__(self, message: str = "the database system is starting up") -> None:
        self.port = free_port()
        self.url = f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/exams"
        self._message = message
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._listener.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> StartingPostgres:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self._listener.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            with conn, contextlib.suppress(OSError):
                self._refuse(conn)

    def _refuse(self, conn: socket.socket) -> None:
        conn.settimeout(5)
        length, code = struct.unpack("!ii", conn.recv(8))
        if code == 80877103:  # SSLRequest: no SSL here, then the startup message follows
            conn.sendall(b"N")
            length = struct.unpack("!i", conn.recv(4))[0]
            conn.recv(length - 4)
        else:
            conn.recv(length - 8)
        fields = b"".join(
            kind + value.encode() + b"\0"
            for kind, value in ((b"S", "FATAL"), (b"V", "FATAL"), (b"C", "57P03"), (b"M", self._message))
        )
        body = fields + b"\0"
        conn.sendall(b"E" + struct.pack("!i", len(body) + 4) + body)


def raised(call: Callable[[], Any]) -> BaseException:
    try:
        call()
    except BaseException as exc:
        return exc
    raise AssertionError("nothing was raised")


async def raised_async(call: Callable[[], Any]) -> BaseException:
    try:
        await call()
    except BaseException as exc:
        return exc
    raise AssertionError("nothing was raised")


def through_sqlalchemy_adapter(error: BaseException) -> DBAPIError:
    """``error`` (asyncpg's) as SQLAlchemy's asyncpg dialect hands it on while running a statement:
    translated by the adapter (its own code), then wrapped in a ``DBAPIError`` subclass."""
    dbapi = AsyncAdapt_asyncpg_dbapi(asyncpg)
    adapter = SimpleNamespace(_connection=SimpleNamespace(is_closed=lambda: True), dbapi=dbapi)
    translated = raised(lambda: AsyncAdapt_asyncpg_connection._handle_exception(adapter, error))  # type: ignore[arg-type]
    wrapped = DBAPIError.instance("UPDATE exam_processing_jobs …", {}, translated, dbapi.Error)  # type: ignore[arg-type]
    wrapped.__cause__ = translated
    return wrapped
