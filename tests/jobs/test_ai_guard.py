"""The AI guard's rules on each backend: in process, Redis and the SQL tables (PostgreSQL, SQLite).

Every backend runs the same checks: slots in flight and their leases, the per-minute cap, the
``429`` pause, the circuit breaker with its one trial call, and that two guards on one store (two
processes) share all of it. Redis and PostgreSQL are required: a missing server fails these tests.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from core.db import Database
from core.settings import load_settings
from jobs.ai_guard import (
    AICircuitOpenError,
    AIGuard,
    AISlotWaitExpiredError,
    GuardLimits,
    GuardRules,
    GuardState,
    LocalAIGuard,
    RedisAIGuard,
    SqlAIGuard,
    acquire,
    new_token,
)
from server.migrate import run_migrations
from support import REDIS_URL, delete_redis_keys, postgres_database, sqlite_url

#: Makes guards that share one store (as the processes of one deployment do).
GuardFactory = Callable[[GuardLimits], AIGuard]

BACKENDS = ["local", "redis", "postgresql", "sqlite"]


@pytest.fixture(scope="module")
def pg_migrated() -> Iterator[str]:
    with postgres_database() as url:
        run_migrations(load_settings({"DATABASE_URL": url}, env_file=Path("/nonexistent.env")))
        yield url


@pytest.fixture
async def make_guard(request: pytest.FixtureRequest, tmp_path: Path, pg_migrated: str) -> AsyncIterator[GuardFactory]:
    backend = request.param
    made: list[AIGuard] = []
    databases: list[Database] = []
    prefix = f"exams-test:ai-guard:{uuid.uuid4().hex}"
    local: dict[str, LocalAIGuard] = {}
    if backend in ("postgresql", "sqlite"):
        url = pg_migrated if backend == "postgresql" else sqlite_url(tmp_path)
        settings = load_settings({"DATABASE_URL": url}, env_file=tmp_path / "absent.env")
        if backend == "sqlite":
            await asyncio.to_thread(run_migrations, settings)
        database = Database.from_settings(settings)
        databases.append(database)
        async with database.engine.begin() as conn:  # a fresh state for each test
            from jobs.ai_guard import AI_GUARD_CALLS, AI_GUARD_STATE

            await conn.execute(AI_GUARD_CALLS.delete())
            await conn.execute(AI_GUARD_STATE.delete())

    def factory(limits: GuardLimits) -> AIGuard:
        guard: AIGuard
        if backend == "local":
            # One process: every caller shares the one guard.
            guard = local.setdefault("guard", LocalAIGuard(limits))
        elif backend == "redis":
            guard = RedisAIGuard.from_url(limits, REDIS_URL, prefix=prefix)
        else:
            guard = SqlAIGuard(limits, databases[0])
        made.append(guard)
        return guard

    yield factory
    if backend == "redis":
        await delete_redis_keys(prefix)
    for guard in made:
        await guard.aclose()
    for database in databases:
        await database.dispose()


def _limits(**changes: float) -> GuardLimits:
    base = {"max_concurrency": 2, "rate_per_minute": 0, "circuit_failures": 2, "circuit_seconds": 0.6}
    base["lease_seconds"] = 30.0
    base.update(changes)
    return GuardLimits(**base)  # type: ignore[arg-type]


backends = pytest.mark.parametrize("make_guard", BACKENDS, indirect=True)


@backends
async def test_slots_in_flight_are_capped_and_shared(make_guard: GuardFactory) -> None:
    first, second = make_guard(_limits()), make_guard(_limits())  # two processes
    a, b, c = new_token(), new_token(), new_token()
    assert (await first.try_start(a)).kind == "granted"
    assert (await second.try_start(b)).kind == "granted"
    refused = await first.try_start(c)
    assert refused.kind == "wait"
    assert 0 < refused.retry_in <= 1
    assert await second.finish(a, "success", trial=False) is False
    assert (await first.try_start(c)).kind == "granted"


@backends
async def test_a_slot_whose_holder_vanished_frees_itself_when_its_lease_ends(make_guard: GuardFactory) -> None:
    guard = make_guard(_limits(max_concurrency=1, lease_seconds=0.4))
    assert (await guard.try_start(new_token())).granted  # never finished: its worker was killed
    assert (await guard.try_start(new_token())).kind == "wait"
    await asyncio.sleep(0.5)
    assert (await guard.try_start(new_token())).granted


@backends
async def test_requests_started_per_minute_are_capped(make_guard: GuardFactory) -> None:
    guard = make_guard(_limits(max_concurrency=10, rate_per_minute=2))
    for _ in range(2):
        token = new_token()
        assert (await guard.try_start(token)).granted
        await guard.finish(token, "success", trial=False)
    refused = await guard.try_start(new_token())
    assert refused.kind == "wait"
    assert 55 < refused.retry_in <= 60  # when the oldest start leaves the 60 s window


@backends
async def test_a_429_pauses_every_caller_for_its_retry_after(make_guard: GuardFactory) -> None:
    first, second = make_guard(_limits()), make_guard(_limits())
    token = new_token()
    assert (await first.try_start(token)).granted
    await first.finish(token, "rate_limited", trial=False, retry_after=0.5)
    paused = await second.try_start(new_token())
    assert paused.kind == "wait"
    assert 0.3 < paused.retry_in <= 0.5
    await asyncio.sleep(0.55)
    assert (await second.try_start(new_token())).kind == "granted"


@backends
async def test_the_circuit_opens_lets_one_trial_through_and_closes_on_its_success(make_guard: GuardFactory) -> None:
    first, second = make_guard(_limits()), make_guard(_limits())
    tokens = [new_token(), new_token()]
    for token in tokens:
        assert (await first.try_start(token)).kind == "granted"
    assert await first.finish(tokens[0], "failure", trial=False) is False
    assert await second.finish(tokens[1], "failure", trial=False) is True  # the second failure opens it

    refused = await second.try_start(new_token())
    assert refused.kind == "open"
    assert 0.3 < refused.retry_in <= 0.6
    await asyncio.sleep(0.65)
    trial = new_token()
    assert (await first.try_start(trial)).kind == "trial"
    assert (await second.try_start(new_token())).kind == "open"  # one trial at a time
    assert await first.finish(trial, "failure", trial=True) is True  # the trial failed: open again
    assert (await second.try_start(new_token())).kind == "open"

    await asyncio.sleep(0.65)
    trial = new_token()
    assert (await second.try_start(trial)).kind == "trial"
    assert await second.finish(trial, "success", trial=True) is False
    assert (await first.try_start(new_token())).kind == "granted"


@backends
async def test_an_abandoned_trial_lets_the_next_caller_try(make_guard: GuardFactory) -> None:
    guard = make_guard(_limits(circuit_failures=1))
    token = new_token()
    await guard.try_start(token)
    assert await guard.finish(token, "failure", trial=False) is True
    await asyncio.sleep(0.65)
    trial = new_token()
    assert (await guard.try_start(trial)).kind == "trial"
    assert await guard.finish(trial, "abandoned", trial=True) is True  # cancelled: undecided
    assert (await guard.try_start(new_token())).kind == "trial"


@backends
async def test_acquire_waits_for_a_free_slot(make_guard: GuardFactory) -> None:
    guard = make_guard(_limits(max_concurrency=1))
    holder = new_token()
    assert (await guard.try_start(holder)).granted

    async def give_back() -> None:
        await asyncio.sleep(0.4)
        await guard.finish(holder, "success", trial=False)

    releaser = asyncio.create_task(give_back())
    started = time.monotonic()
    granted = await acquire(guard, new_token(), wait_when_open=False, deadline=time.monotonic() + 5)
    assert granted.kind == "granted"
    assert 0.35 < time.monotonic() - started < 2
    await releaser


@backends
async def test_acquire_gives_up_at_its_deadline_and_on_an_open_circuit(make_guard: GuardFactory) -> None:
    guard = make_guard(_limits(max_concurrency=1, circuit_failures=1, circuit_seconds=5))
    holder = new_token()
    assert (await guard.try_start(holder)).granted
    started = time.monotonic()
    with pytest.raises(AISlotWaitExpiredError):
        await acquire(guard, new_token(), wait_when_open=False, deadline=time.monotonic() + 0.5)
    assert 0.45 < time.monotonic() - started < 1.5
    await guard.finish(holder, "failure", trial=False)
    with pytest.raises(AICircuitOpenError):
        await acquire(guard, new_token(), wait_when_open=False, deadline=time.monotonic() + 5)
    with pytest.raises(AISlotWaitExpiredError):  # AI_FALLBACK=fail: waits for the trial instead
        await acquire(guard, new_token(), wait_when_open=True, deadline=time.monotonic() + 0.3)


def test_rules_late_failures_do_not_extend_the_open_period() -> None:
    rules = GuardRules(_limits(circuit_failures=2, circuit_seconds=10))
    state = GuardState()
    rules.record(state, 100.0, "failure", trial=False, retry_after=None)
    rules.record(state, 101.0, "failure", trial=False, retry_after=None)
    assert (state.failures, state.open_until) == (2, 111.0)
    rules.record(state, 105.0, "failure", trial=False, retry_after=None)  # sent before it opened
    assert state.open_until == 111.0
    assert rules.admit(state, 111.5, 0, 0, None).kind == "trial"
    rules.record(state, 112.0, "success", trial=True, retry_after=None)
    assert state == GuardState(paused_until=0.0, failures=0, open_until=0.0, trial_until=0.0)
