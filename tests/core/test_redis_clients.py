"""Redis clients wait for a free pooled connection instead of failing (real Redis; required)."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis

import core.redis_clients
from core.redis_clients import async_client, sync_client
from support import REDIS_URL

CALLERS = 6


@pytest.fixture(autouse=True)
def small_pools(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(core.redis_clients, "MAX_CONNECTIONS", 2)


def test_more_threads_than_connections_wait_their_turn() -> None:
    client = sync_client(REDIS_URL)
    try:
        with ThreadPoolExecutor(CALLERS) as pool:
            # Each caller holds its connection for 0.2 s (BLPOP on an empty list times out).
            results = list(pool.map(lambda i: client.blpop([f"exams-test:empty:{i}"], timeout=0.2), range(CALLERS)))
        assert results == [None] * CALLERS
        assert client.connection_pool.max_connections == 2
    finally:
        client.close()


def test_a_plain_pool_of_the_same_size_fails_the_extra_callers() -> None:
    """What the blocking pool is for: redis-py's default pool raises past its size."""
    client = redis.Redis(connection_pool=redis.ConnectionPool.from_url(REDIS_URL, max_connections=2))
    try:
        with ThreadPoolExecutor(CALLERS) as pool, pytest.raises(redis.exceptions.MaxConnectionsError):
            list(pool.map(lambda i: client.blpop([f"exams-test:empty:{i}"], timeout=0.2), range(CALLERS)))
    finally:
        client.close()


async def test_more_tasks_than_connections_wait_their_turn() -> None:
    client = async_client(REDIS_URL)
    try:
        results = await asyncio.gather(
            *(client.blpop([f"exams-test:empty:{i}"], timeout=0.2) for i in range(CALLERS))  # type: ignore[misc]
        )
        assert results == [None] * CALLERS
    finally:
        await client.aclose()
