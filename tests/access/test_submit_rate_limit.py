"""``SUBMIT_RATE_LIMIT``: N submissions per period and caller, shared by every web process.

The counters on each backend (in process, Redis, PostgreSQL, SQLite): two limiters on one store
(two processes) count together, exactly, even when hit at once; a new period starts again. Then
through the app: over the limit a ``429`` problem with ``Retry-After`` and nothing stored; two
app instances share the limit through Redis (per token) and through PostgreSQL (per address).
Redis and PostgreSQL are required: a missing server fails these tests.

The app-level limits are per hour, so that no period ends in the middle of a test.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from access_support import NO_AI, TOKENS, add_token, bearer, submit
from litestar.testing import TestClient
from sqlalchemy import func, select

from access.models import API_RATE_LIMITS
from access.rate_limit import LocalRateLimiter, Rate, RateLimiter, RedisRateLimiter, SqlRateLimiter
from core.db import Database
from core.settings import Settings, SettingsError, load_settings
from jobs.models import ExamProcessingJob
from server.app import create_app
from server.migrate import run_migrations
from support import NO_ENV_FILE, REDIS_URL, ExamsApp, app_settings, delete_redis_keys, postgres_database

#: Makes a limiter of a rate (with a clock, except on Redis, which uses its own).
LimiterFactory = Callable[..., RateLimiter]


@pytest.fixture(scope="module")
def pg_migrated() -> Iterator[str]:
    """A PostgreSQL database at the latest schema, shared by this module's tests."""
    with postgres_database() as url:
        run_migrations(load_settings({"DATABASE_URL": url}, env_file=NO_ENV_FILE))
        yield url


def test_rates_are_read_from_the_setting() -> None:
    assert Rate.parse("30/minute") == Rate(30, 60)
    assert Rate.parse(" 5/Second ") == Rate(5, 1)
    assert Rate.parse("100/hour") == Rate(100, 3600)
    assert Rate.parse("1000/day") == Rate(1000, 86400)
    assert Rate.parse("") is None
    for bad in ("30", "0/minute", "x/minute", "30/fortnight"):
        with pytest.raises(ValueError, match="not a rate"):
            Rate.parse(bad)


@pytest.mark.parametrize("value", ["30/fortnight", "thirty/minute", "0/hour", "30 per minute"])
def test_a_bad_rate_stops_start_up_naming_the_setting(value: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings({"SUBMIT_RATE_LIMIT": value}, env_file=NO_ENV_FILE)
    message = str(caught.value)
    assert message.startswith("SUBMIT_RATE_LIMIT must be N/second, N/minute, N/hour or N/day")
    assert "\n" not in message
    assert load_settings({"SUBMIT_RATE_LIMIT": "30/minute"}, env_file=NO_ENV_FILE).submit_rate_limit == "30/minute"


@pytest.fixture(params=["local", "redis", "postgresql", "sqlite"])
async def make_limiter(
    request: pytest.FixtureRequest, fresh_sqlite: Callable[[], str], pg_migrated: str
) -> AsyncIterator[LimiterFactory]:
    """Makes limiters sharing one store, as the web processes of one deployment do."""
    backend = request.param
    made: list[RateLimiter] = []
    prefix = f"exams-test:submit-rate:{uuid.uuid4().hex}"
    database = None
    if backend in ("postgresql", "sqlite"):
        url = pg_migrated if backend == "postgresql" else fresh_sqlite()
        database = Database.from_settings(load_settings({"DATABASE_URL": url}, env_file=NO_ENV_FILE))
        async with database.engine.begin() as conn:
            await conn.execute(API_RATE_LIMITS.delete())
    shared: dict[Rate, LocalRateLimiter] = {}

    def factory(rate: Rate, clock: Callable[[], float] = time.time) -> RateLimiter:
        limiter: RateLimiter
        if backend == "local":
            limiter = shared.setdefault(rate, LocalRateLimiter(rate, clock))  # one process: one limiter
        elif backend == "redis":
            limiter = RedisRateLimiter.from_url(rate, REDIS_URL, prefix=prefix)
        else:
            assert database is not None
            limiter = SqlRateLimiter(rate, database, clock)
        made.append(limiter)
        return limiter

    factory.backend = backend  # type: ignore[attr-defined]
    yield factory
    if backend == "redis":
        await delete_redis_keys(prefix)
    for limiter in made:
        await limiter.aclose()
    if database is not None:
        await database.dispose()


async def test_two_limiters_on_one_store_count_together_exactly(make_limiter: LimiterFactory) -> None:
    rate = Rate(5, 3600)
    first, second = make_limiter(rate), make_limiter(rate)
    decisions = await asyncio.gather(*(limiter.hit("token:a") for limiter in (first, second) * 6))
    assert sum(d.allowed for d in decisions) == 5
    refused = [d for d in decisions if not d.allowed]
    assert len(refused) == 7
    assert all(1 <= d.retry_after <= 3600 for d in refused)
    # Another key has a count of its own.
    assert (await second.hit("token:b")).allowed


async def test_a_new_period_starts_the_count_again(make_limiter: LimiterFactory) -> None:
    now = [1_800_000_030.0]  # 30 s into a minute
    backend = make_limiter.backend  # type: ignore[attr-defined]
    limiter = make_limiter(Rate(1, 60), lambda: now[0]) if backend != "redis" else make_limiter(Rate(1, 1))
    if backend == "redis":
        # Redis's own clock decides: start early in one of its seconds, then wait for the next.
        client = limiter._client  # type: ignore[attr-defined]
        while (await client.time())[1] > 300_000:
            await asyncio.sleep(0.05)
        assert (await limiter.hit("address:10.0.0.1")).allowed
        refused = await limiter.hit("address:10.0.0.1")
        assert not refused.allowed
        assert refused.retry_after == 1
        await asyncio.sleep(1.0)
        assert (await limiter.hit("address:10.0.0.1")).allowed
        return
    assert (await limiter.hit("address:10.0.0.1")).allowed
    refused = await limiter.hit("address:10.0.0.1")
    assert (refused.allowed, refused.retry_after) == (False, 30)
    now[0] += 29.5
    assert (await limiter.hit("address:10.0.0.1")).retry_after == 1
    now[0] += 0.5  # the next minute
    assert (await limiter.hit("address:10.0.0.1")).allowed


def _job_count(database_url: str) -> int:
    async def count() -> int:
        database = Database.from_settings(load_settings({"DATABASE_URL": database_url}, env_file=NO_ENV_FILE))
        try:
            async with database.reader.connect() as conn:
                return int((await conn.execute(select(func.count()).select_from(ExamProcessingJob))).scalar_one())
        finally:
            await database.dispose()

    return asyncio.run(count())


def test_over_the_limit_is_a_429_with_retry_after_and_nothing_stored(fresh_sqlite: Callable[[], str]) -> None:
    """API_AUTH=off: per client address (the test client's)."""
    app = ExamsApp(app_settings(fresh_sqlite(), NO_AI, AI_API_ENABLED="false", SUBMIT_RATE_LIMIT="2/hour"))
    try:
        app.start()
        assert [submit(app, None).status_code for _ in range(2)] == [202, 202]
        for lang, title in (("en", "Too many submissions"), ("ar", "إرسالات كثيرة جدًا")):
            response = submit(app, None, **{"Accept-Language": lang})
            assert response.status_code == 429
            assert response.headers["content-type"] == "application/problem+json"
            assert 1 <= int(response.headers["retry-after"]) <= 3600
            problem = response.json()
            assert problem["type"] == "/problems/rate-limited"
            assert problem["title"] == title
            assert problem["status"] == 429
            assert problem["detail"]
        assert _job_count(app.database_url) == 2
        # Only submitting is limited.
        assert app.http.get("/api/exam-results").status_code == 200
    finally:
        app.stop()


def _clients(settings: Settings, count: int, stack: ExitStack) -> list[TestClient[Any]]:
    """``count`` instances of the app (as ``exams serve --workers`` runs them), serving at once."""
    return [stack.enter_context(TestClient(create_app(settings))) for _ in range(count)]


def test_two_app_instances_share_the_limit_through_redis(fresh_sqlite: Callable[[], str]) -> None:
    """Per token, counted in Redis (QUEUE_CONNECTION=redis). Bodies are invalid on purpose: every
    submit request counts, and a 422 sends nothing to the broker."""
    import redis

    url = fresh_sqlite()
    names = [f"limited-{uuid.uuid4().hex[:8]}", f"other-{uuid.uuid4().hex[:8]}"]
    limited, other = (add_token(url, name) for name in names)
    settings = app_settings(url, NO_AI, **TOKENS, QUEUE_CONNECTION="redis", REDIS_URL=REDIS_URL)
    settings = settings.with_overrides(submit_rate_limit="3/hour")
    body = {"exam_code": "NO-SUCH-EXAM", "student_id": "s-1", "answers": {}}
    try:
        with ExitStack() as stack:
            one, two = _clients(settings, 2, stack)
            codes = [
                client.post("/api/exam-results/process", json=body, headers=bearer(limited)).status_code
                for client in (one, two, one)
            ]
            assert codes == [422, 422, 422]
            for client in (two, one):
                refused = client.post("/api/exam-results/process", json=body, headers=bearer(limited))
                assert refused.status_code == 429
                assert int(refused.headers["retry-after"]) >= 1
            assert two.post("/api/exam-results/process", json=body, headers=bearer(other)).status_code == 422
    finally:
        client = redis.Redis.from_url(REDIS_URL)
        client.delete(*(f"exams:submit-rate:token:{name}" for name in names))
        client.close()


def test_two_app_instances_share_the_limit_through_postgresql(pg_migrated: str, tmp_path: Path) -> None:
    """Per client address, counted in PostgreSQL's api_rate_limits (QUEUE_CONNECTION=rabbitmq:
    nothing is sent, every body is invalid)."""
    settings = app_settings(pg_migrated, NO_AI, QUEUE_CONNECTION="rabbitmq", AI_API_ENABLED="false")
    settings = settings.with_overrides(submit_rate_limit="2/hour")
    body = {"exam_code": "NO-SUCH-EXAM", "student_id": "s-1", "answers": {}}
    asyncio.run(_clear_counters(pg_migrated))
    with ExitStack() as stack:
        one, two = _clients(settings, 2, stack)
        assert one.post("/api/exam-results/process", json=body).status_code == 422
        assert two.post("/api/exam-results/process", json=body).status_code == 422
        for client in (one, two):
            refused = client.post("/api/exam-results/process", json=body)
            assert refused.status_code == 429
            assert refused.json()["type"] == "/problems/rate-limited"


def test_submissions_go_on_when_the_counters_cannot_be_reached(fresh_sqlite: Callable[[], str]) -> None:
    """A Redis that does not answer never blocks submitting (the limit is left unchecked)."""
    settings = app_settings(fresh_sqlite(), NO_AI, QUEUE_CONNECTION="redis", REDIS_URL="redis://127.0.0.1:1/0")
    settings = settings.with_overrides(submit_rate_limit="1/hour")
    body = {"exam_code": "NO-SUCH-EXAM", "student_id": "s-1", "answers": {}}
    with ExitStack() as stack:
        (client,) = _clients(settings, 1, stack)
        codes = [client.post("/api/exam-results/process", json=body).status_code for _ in range(3)]
    assert codes == [422, 422, 422]


async def _clear_counters(url: str) -> None:
    database = Database.from_settings(load_settings({"DATABASE_URL": url}, env_file=NO_ENV_FILE))
    try:
        async with database.engine.begin() as conn:
            await conn.execute(API_RATE_LIMITS.delete())
    finally:
        await database.dispose()
