"""Redis clients whose connection pools make a caller wait for a free connection, not fail.

redis-py (8.x) caps a connection pool at 100 connections by default and raises
``MaxConnectionsError`` ("Too many connections") to the 101st concurrent caller. A worker with
hundreds of threads (each acknowledging or re-enqueueing its message) or a web process under a
burst of submissions would lose operations that way: measured with ``bench/inflight.py`` at 500
threads, Dramatiq's retry middleware could not re-enqueue messages. A blocking pool of the same
size queues the extra callers for up to :data:`WAIT_SECONDS` instead.
"""

from __future__ import annotations

from typing import Any

import redis
import redis.asyncio

__all__ = ("MAX_CONNECTIONS", "WAIT_SECONDS", "async_client", "sync_client")

#: Connections one pool opens at most (Redis' own limit is 10,000 clients).
MAX_CONNECTIONS = 100
#: Seconds a caller waits for a free connection before the pool gives up.
WAIT_SECONDS = 30.0


def sync_client(url: str, **options: Any) -> redis.Redis:
    """A client for ``url`` on a blocking pool (Dramatiq's broker)."""
    pool = redis.BlockingConnectionPool.from_url(url, max_connections=MAX_CONNECTIONS, timeout=WAIT_SECONDS, **options)
    return redis.Redis(connection_pool=pool)


def async_client(url: str, **options: Any) -> redis.asyncio.Redis:
    """An asyncio client for ``url`` on a blocking pool (the AI guard, the submit rate limit)."""
    pool = redis.asyncio.BlockingConnectionPool.from_url(
        url, max_connections=MAX_CONNECTIONS, timeout=WAIT_SECONDS, **options
    )
    return redis.asyncio.Redis(connection_pool=pool)
