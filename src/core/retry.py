"""The one retry policy: what is transient, how long to wait before the next try.

Every retry loop of the product (a job step, the actor waiting for the database, saving a paid
AI answer through a database outage, the AI client, a wait for the AI guard) asks these
questions here, so that they are answered the same way everywhere. How many times is the
caller's setting (``JOB_MAX_RETRIES`` for jobs).

Two questions, two answers:

- :func:`is_connection_problem`: the database (or the broker, or an HTTP server) could not be
  reached, is restarting, or has no room left (a full disk). Nothing is wrong with the work
  itself: wait and carry on where it stopped, and never record it as the job's failure. A web
  request answers ``503``.
- :func:`is_transient`: worth another try later. The connection problems above, plus a
  database that refused a transaction only for now (serialization failure, deadlock, lock
  timeout, statement timeout).

Errors are looked at through their wrappers: SQLAlchemy's ``DBAPIError`` (its ``orig``, then
the driver's own exception behind the adapter), and any ``raise … from`` chain. A library
that was never imported cannot have raised anything, so the classes of the broker clients
(redis, pika, Dramatiq) and of httpx are looked up only among the modules already loaded:
importing this module costs no client library.
"""

from __future__ import annotations

import random
import sqlite3
import sys
from collections.abc import Iterator

import asyncpg.exceptions  # type: ignore[import-untyped]
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

__all__ = ("DATABASE_ERRORS", "backoff_seconds", "is_connection_problem", "is_transient")

#: What the database layer raises, whatever the cause: SQLAlchemy's wrappers and pool, the OS's
#: socket errors, and what asyncpg raises unwrapped while *opening* a connection ("the database
#: system is shutting down", "… is starting up", "too many clients"). It names where an error
#: came from (a job's error says ``database_unavailable``); whether it is worth another try is
#: :func:`is_transient`'s answer alone (an ``IntegrityError`` is one of these, and a bug).
DATABASE_ERRORS: tuple[type[BaseException], ...] = (
    OperationalError,
    InterfaceError,
    DBAPIError,
    PoolTimeoutError,
    ConnectionError,
    OSError,
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.InsufficientResourcesError,
    asyncpg.exceptions.InterfaceError,
)

#: PostgreSQL SQLSTATE classes of a server that cannot serve anyone right now: ``08`` connection
#: exception, ``53`` insufficient resources (disk full, out of memory, too many connections).
_UNAVAILABLE_SQLSTATE_CLASSES = frozenset({"08", "53"})
#: Single SQLSTATEs of the same kind: administrator shutdown (``pg_ctl stop -m fast``), crash
#: shutdown (a backend died: every session is reset), cannot connect now (shutting down,
#: starting up, in recovery), idle session timeout, I/O error.
_UNAVAILABLE_SQLSTATES = frozenset({"57P01", "57P02", "57P03", "57P05", "58030"})
#: SQLSTATEs of a transaction refused only for now: serialization failure, deadlock, lock not
#: available, statement timeout (query canceled).
_RETRYABLE_SQLSTATES = frozenset({"40001", "40P01", "55P03", "57014"})
#: SQLite primary result codes of a database that cannot be written right now: busy, locked,
#: out of memory, read-only (a file system remounted read-only), I/O error (``disk I/O error``),
#: full (``database or disk is full``), cannot open, lock protocol. ``SQLITE_CORRUPT`` is not
#: one of them: that needs an operator.
_UNAVAILABLE_SQLITE_CODES = frozenset({5, 6, 7, 8, 10, 13, 14, 15})

#: Broker and HTTP client errors of a server that is away: (module, class names). Looked up in
#: ``sys.modules`` only (see the module's docstring).
_UNAVAILABLE_CLIENT_ERRORS: tuple[tuple[str, tuple[str, ...]], ...] = (
    # redis-py: ConnectionError also covers BusyLoadingError (a restarted Redis loading its data).
    ("redis.exceptions", ("ConnectionError", "TimeoutError", "ReadOnlyError", "TryAgainError")),
    # Dramatiq wraps its brokers' connection errors in these.
    ("dramatiq.errors", ("BrokerConnectionError",)),
    # pika (RabbitMQ): a lost or refused connection, a channel or connection used after it closed.
    ("pika.exceptions", ("AMQPConnectionError", "ChannelWrongStateError", "ConnectionWrongStateError")),
    # httpx: timeouts, refused or reset connections, a server closing mid-answer, a proxy failing.
    ("httpx", ("TimeoutException", "NetworkError", "RemoteProtocolError", "ProxyError")),
)
#: Subclasses of the classes above that no wait will fix (wrong credentials, wrong protocol).
_PERMANENT_CLIENT_ERRORS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("redis.exceptions", ("AuthenticationError", "AuthorizationError")),
    (
        "pika.exceptions",
        (
            "AuthenticationError",
            "ProbableAuthenticationError",
            "ProbableAccessDeniedError",
            "IncompatibleProtocolError",
        ),
    ),
)
#: AMQP reply codes of a channel the broker closed because it is going away or short of
#: resources (``connection-forced``, ``resource-error``, ``internal-error``).
_UNAVAILABLE_AMQP_REPLY_CODES = frozenset({320, 506, 541})


def _loaded(table: tuple[tuple[str, tuple[str, ...]], ...]) -> tuple[type[BaseException], ...]:
    found: list[type[BaseException]] = []
    for module_name, names in table:
        module = sys.modules.get(module_name)
        if module is None:
            continue
        for name in names:
            cls = getattr(module, name, None)
            if isinstance(cls, type) and issubclass(cls, BaseException):
                found.append(cls)
    return tuple(found)


def _links(exc: BaseException) -> Iterator[BaseException]:
    """``exc``, then what it wraps: a ``DBAPIError``'s ``orig``, then each ``__cause__``."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen and len(seen) < 10:
        seen.add(id(current))
        yield current
        orig = current.orig if isinstance(current, DBAPIError) else None
        current = orig if isinstance(orig, BaseException) else current.__cause__


def _sqlstate(error: BaseException) -> str | None:
    # asyncpg's errors carry ``sqlstate``; SQLAlchemy's asyncpg adapter copies it to ``pgcode``
    # (so does psycopg).
    for attribute in ("sqlstate", "pgcode"):
        value = getattr(error, attribute, None)
        if isinstance(value, str) and len(value) == 5:
            return value
    return None


def _verdict(error: BaseException) -> tuple[bool, bool] | None:
    """``(unavailable, retryable)`` when ``error`` alone decides it; ``None`` to look further."""
    if isinstance(error, DBAPIError) and error.connection_invalidated:
        return True, True
    if isinstance(error, PoolTimeoutError):
        return True, True
    if isinstance(error, sqlite3.Error):
        code = getattr(error, "sqlite_errorcode", None)
        if isinstance(code, int):
            unavailable = code & 0xFF in _UNAVAILABLE_SQLITE_CODES
            return unavailable, unavailable
        return None
    state = _sqlstate(error)
    if state is not None:
        unavailable = state[:2] in _UNAVAILABLE_SQLSTATE_CLASSES or state in _UNAVAILABLE_SQLSTATES
        return unavailable, unavailable or state in _RETRYABLE_SQLSTATES
    if isinstance(error, asyncpg.exceptions.InterfaceError):
        # The client side of asyncpg: "connection is closed", "connection was closed in the
        # middle of operation"; the rest ("another operation is in progress") are bugs.
        closed = "closed" in str(error)
        return closed, closed
    if isinstance(error, _loaded(_PERMANENT_CLIENT_ERRORS)):
        return False, False
    if isinstance(error, (OSError, *_loaded(_UNAVAILABLE_CLIENT_ERRORS))):
        return True, True
    reply_code = getattr(error, "reply_code", None)
    if type(error).__name__ == "ChannelClosedByBroker" and isinstance(reply_code, int):
        unavailable = reply_code in _UNAVAILABLE_AMQP_REPLY_CODES
        return unavailable, unavailable
    return None


def _classify(exc: BaseException) -> tuple[bool, bool]:
    for error in _links(exc):
        verdict = _verdict(error)
        if verdict is not None:
            return verdict
    # A driver SQLAlchemy knows only by its DB-API classes (neither asyncpg nor sqlite3): its
    # OperationalError and InterfaceError are about the connection, not the statement.
    unavailable = isinstance(exc, OperationalError | InterfaceError)
    return unavailable, unavailable


def is_connection_problem(exc: BaseException) -> bool:
    """Whether ``exc`` says the database (or the broker, or an HTTP server) could not be reached,
    is restarting, or has no room left, rather than refusing a statement.

    A web request maps the first to ``503`` and the second to ``500``: a statement the database
    refuses is a bug, not an outage. A job waits for the database and carries on.
    """
    return _classify(exc)[0]


def is_transient(exc: BaseException) -> bool:
    """Whether trying again later may succeed: a connection problem, or a transaction the
    database refused only for now (serialization failure, deadlock, lock or statement timeout)."""
    return _classify(exc)[1]


def backoff_seconds(
    attempt: int, *, base: float, cap: float, jitter: bool = True, at_least: float | None = None
) -> float:
    """Seconds to wait before try number ``attempt + 1``: ``base`` doubled per earlier try, capped.

    ``attempt`` counts the tries made so far (1 after the first). Jitter stretches the wait by up to
    half, so that jobs failing together do not retry together; ``at_least`` is a server's
    ``Retry-After``, which is always honoured.
    """
    delay = min(base * 2 ** max(attempt - 1, 0), cap)
    if jitter:
        delay *= random.uniform(1.0, 1.5)
    return float(max(delay, at_least or 0.0))
