"""The one classification of errors (``core.retry``): one test per class of error the fault drills
met, each error made the way its library makes it (for real where that is cheap: a refused
connection, a PostgreSQL that is starting up, a SQLite disk that is full, a session ended by the
server), and the web's answer to a database that is starting up.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]
import httpx
import pika
import pika.exceptions
import pytest
import redis
import redis.exceptions
from dramatiq.errors import ConnectionClosed
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import create_async_engine

from core.retry import DATABASE_ERRORS, backoff_seconds, is_connection_problem, is_transient
from outage_errors import StartingPostgres, raised, raised_async, through_sqlalchemy_adapter
from support import ExamsApp, FakeAIProcess, app_settings, free_port


@pytest.fixture
def starting_postgres() -> Iterator[StartingPostgres]:
    with StartingPostgres() as server:
        yield server


# --- PostgreSQL through asyncpg and SQLAlchemy ------------------------------------------------------


async def test_a_postgresql_starting_up_or_shutting_down_is_a_connection_problem(
    starting_postgres: StartingPostgres,
) -> None:
    # asyncpg raises it unwrapped while connecting, and SQLAlchemy passes it on as it is.
    engine = create_async_engine(starting_postgres.url)
    try:
        error = await raised_async(lambda: engine.connect().__aenter__())
    finally:
        await engine.dispose()

    assert type(error) is asyncpg.exceptions.CannotConnectNowError, repr(error)
    assert isinstance(error, DATABASE_ERRORS)
    assert is_connection_problem(error)
    assert is_transient(error)
    shutting_down = asyncpg.exceptions.CannotConnectNowError("the database system is shutting down")
    assert is_connection_problem(shutting_down)


async def test_a_session_ended_by_the_server_is_a_connection_problem(pg_url: str) -> None:
    # pg_ctl stop -m fast ends every session like pg_terminate_backend does: 57P01, then the
    # connection is gone.
    engine = create_async_engine(pg_url)
    try:
        async with engine.connect() as victim:
            pid = (await victim.execute(text("SELECT pg_backend_pid()"))).scalar_one()
            async with engine.connect() as admin:
                await admin.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            error = await raised_async(lambda: victim.execute(text("SELECT 1")))
    finally:
        await engine.dispose()

    assert isinstance(error, DBAPIError), repr(error)
    assert is_connection_problem(error)
    assert is_transient(error)


@pytest.mark.parametrize(
    "error",
    [
        asyncpg.exceptions.AdminShutdownError("terminating connection due to administrator command"),
        asyncpg.exceptions.CrashShutdownError("terminating connection because of crash of another server process"),
        asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
        asyncpg.exceptions.TooManyConnectionsError("sorry, too many clients already"),
        asyncpg.exceptions.DiskFullError("could not extend file: No space left on device"),
        asyncpg.exceptions.InterfaceError("connection is closed"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_postgresql_errors_of_a_server_away_or_out_of_room_are_connection_problems(error: BaseException) -> None:
    wrapped = through_sqlalchemy_adapter(error)

    assert is_connection_problem(wrapped), repr(wrapped)
    assert is_connection_problem(error)
    assert isinstance(error, DATABASE_ERRORS)


def test_postgresql_errors_of_a_refused_statement_are_not_connection_problems() -> None:
    refused = [
        asyncpg.exceptions.UniqueViolationError("duplicate key value violates unique constraint"),
        asyncpg.exceptions.UndefinedTableError('relation "exams" does not exist'),
        asyncpg.exceptions.InterfaceError("cannot perform operation: another operation is in progress"),
    ]
    for error in refused:
        assert not is_connection_problem(through_sqlalchemy_adapter(error)), error
        assert not is_transient(through_sqlalchemy_adapter(error)), error


def test_a_serialization_failure_is_transient_but_the_database_is_there() -> None:
    for error in (
        asyncpg.exceptions.SerializationError("could not serialize access due to concurrent update"),
        asyncpg.exceptions.DeadlockDetectedError("deadlock detected"),
    ):
        wrapped = through_sqlalchemy_adapter(error)
        assert is_transient(wrapped)
        assert not is_connection_problem(wrapped)


async def test_a_refused_connection_is_a_connection_problem() -> None:
    engine = create_async_engine(f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/none")
    try:
        error = await raised_async(lambda: engine.connect().__aenter__())
    finally:
        await engine.dispose()

    assert isinstance(error, OSError), repr(error)
    assert is_connection_problem(error)


# --- SQLite -------------------------------------------------------------------------------------


async def test_a_full_sqlite_disk_is_a_connection_problem_and_a_missing_table_is_not(tmp_path: Path) -> None:
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'full.db'}")
    try:
        async with engine.begin() as conn:
            await conn.execute(text("CREATE TABLE t (x TEXT)"))
        async with engine.connect() as conn:
            await conn.execute(text("PRAGMA max_page_count = 4"))  # a disk with four pages of room
            full = await raised_async(lambda: conn.execute(text("INSERT INTO t VALUES (:x)"), [{"x": "x" * 4000}] * 10))
        async with engine.connect() as conn:
            missing = await raised_async(lambda: conn.execute(text("SELECT * FROM nowhere")))
    finally:
        await engine.dispose()

    assert "database or disk is full" in str(full)
    assert is_connection_problem(full)
    assert is_transient(full)
    assert "no such table" in str(missing)
    assert not is_connection_problem(missing)  # a bug: 500, not 503
    assert not is_transient(missing)


# --- brokers ---------------------------------------------------------------------------------------


def test_redis_away_or_loading_is_a_connection_problem() -> None:
    client = redis.Redis(port=free_port(), socket_connect_timeout=2)
    refused = raised(client.ping)

    assert isinstance(refused, redis.exceptions.ConnectionError), repr(refused)
    assert is_connection_problem(refused)
    assert is_transient(redis.exceptions.BusyLoadingError("Redis is loading the dataset in memory"))
    assert is_transient(redis.exceptions.TimeoutError("Timeout reading from socket"))
    # Dramatiq's wrapper of its broker's connection errors.
    assert is_transient(ConnectionClosed(refused))
    # An exception raised from a Redis outage (the AI guard's) is transient through its cause.
    wrapped = RuntimeError("AI guard unavailable")
    wrapped.__cause__ = refused
    assert is_transient(wrapped)
    assert not is_transient(redis.exceptions.AuthenticationError("invalid username-password pair"))
    assert not is_transient(redis.exceptions.ResponseError("WRONGTYPE Operation against a key"))


def test_rabbitmq_away_is_a_connection_problem() -> None:
    parameters = pika.URLParameters(f"amqp://guest:guest@127.0.0.1:{free_port()}/?connection_attempts=1")
    refused = raised(lambda: pika.BlockingConnection(parameters))

    assert isinstance(refused, pika.exceptions.AMQPConnectionError), repr(refused)
    assert is_connection_problem(refused)
    assert is_transient(pika.exceptions.StreamLostError("Transport indicated EOF"))
    assert is_transient(pika.exceptions.ChannelWrongStateError("Channel is closed."))
    assert is_transient(
        pika.exceptions.ChannelClosedByBroker(320, "CONNECTION_FORCED - broker forced connection closure")
    )
    assert not is_transient(pika.exceptions.ChannelClosedByBroker(404, "NOT_FOUND - no queue 'exams'"))
    assert not is_transient(pika.exceptions.ProbableAuthenticationError("ACCESS_REFUSED"))


# --- HTTP (the AI API) -----------------------------------------------------------------------------


def test_an_http_server_away_or_slow_is_a_connection_problem_and_a_bad_request_is_not() -> None:
    refused = raised(lambda: httpx.get(f"http://127.0.0.1:{free_port()}/v1", timeout=2))

    assert isinstance(refused, httpx.ConnectError), repr(refused)
    assert is_connection_problem(refused)
    assert is_transient(httpx.ReadTimeout("timed out"))
    assert is_transient(httpx.RemoteProtocolError("Server disconnected without sending a response."))
    assert not is_transient(httpx.UnsupportedProtocol("Request URL is missing an 'http://' or 'https://' protocol."))
    assert not is_transient(httpx.LocalProtocolError("Illegal header value"))


def test_errors_of_no_outage_are_neither() -> None:
    for error in (ValueError("bad"), KeyError("x"), RuntimeError("bug")):
        assert not is_connection_problem(error)
        assert not is_transient(error)


def test_backoff_doubles_up_to_the_cap_and_honours_retry_after() -> None:
    assert [backoff_seconds(n, base=1, cap=10, jitter=False) for n in range(1, 6)] == [1, 2, 4, 8, 10]
    assert backoff_seconds(1, base=1, cap=10, jitter=False, at_least=30) == 30
    assert 1 <= backoff_seconds(1, base=1, cap=10) <= 1.5


# --- what the web answers -----------------------------------------------------------------------------


def test_a_submission_while_postgresql_starts_up_is_a_503(
    starting_postgres: StartingPostgres, fake_ai_http: FakeAIProcess
) -> None:
    app = ExamsApp(app_settings(starting_postgres.url, fake_ai_http.base_url)).start()
    try:
        response = app.submit()
    finally:
        app.stop()

    assert response.status_code == 503, response.text
    assert response.headers["content-type"].split(";")[0] == "application/problem+json"
    assert response.json()["type"] == "/problems/service-unavailable"
    assert "CannotConnectNowError" in app.log()
