"""``SUBMIT_RATE_LIMIT``: at most N submissions per period and caller, shared by every web process.

A fixed window: the counter of a caller (a token, or a client address) counts the requests of
the current period (epoch time divided by the period: every caller's minute starts on the
minute); the first request of a new period starts again at 1. Over the limit, the answer says
how long until the period ends (``Retry-After``). A burst straddling two periods may reach twice
the limit within one period's length; the limit holds for every period.

Three backends, picked by the composition root like the AI guard's (``jobs.ai_guard``):
:class:`RedisRateLimiter` (one Lua script per request: atomic across hosts, Redis's clock),
:class:`SqlRateLimiter` (one ``INSERT … ON CONFLICT DO UPDATE … RETURNING`` per request on
``api_rate_limits``: atomic on PostgreSQL and SQLite alike; the hosts' clocks, keep them on NTP)
and :class:`LocalRateLimiter` (one process: embedded mode).

Why not Litestar's ``RateLimitMiddleware``: it reads the caller's history from its store and
writes it back (two commands, so concurrent requests in several processes lose counts), has no
SQL store, and counts before the caller is known (it keys by address, not by token).
"""

from __future__ import annotations

import math
import random
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from access.models import API_RATE_LIMITS

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.commands.core import AsyncScript

    from core.db import Database

__all__ = ("Decision", "LocalRateLimiter", "Rate", "RateLimiter", "RedisRateLimiter", "SqlRateLimiter")

_PERIODS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}


@dataclass(frozen=True)
class Rate:
    """``limit`` requests per ``period`` seconds."""

    limit: int
    period: int

    @classmethod
    def parse(cls, text: str) -> Rate | None:
        """``30/minute`` → ``Rate(30, 60)``; empty → ``None`` (no limit). The setting was checked
        at start-up (``core.settings``), so anything else is a :class:`ValueError`."""
        if not text.strip():
            return None
        count, _, unit = text.strip().partition("/")
        period = _PERIODS.get(unit.strip().lower())
        if period is None or not count.strip().isdigit() or int(count) < 1:
            msg = f"not a rate: {text!r} (N/second, N/minute, N/hour or N/day)"
            raise ValueError(msg)
        return cls(int(count), period)


@dataclass(frozen=True)
class Decision:
    """Whether one request may go ahead, and if not, in how many whole seconds it may."""

    allowed: bool
    retry_after: int = 0

    @classmethod
    def of(cls, rate: Rate, hits: int, seconds_left: float) -> Decision:
        """The decision for the ``hits``-th request of a window that ends in ``seconds_left``."""
        if hits <= rate.limit:
            return cls(allowed=True)
        return cls(allowed=False, retry_after=max(1, math.ceil(seconds_left)))


class RateLimiter(ABC):
    """Counts requests per key against one :class:`Rate`; ``clock``: epoch seconds (Redis uses its own)."""

    def __init__(self, rate: Rate, clock: Callable[[], float] = time.time) -> None:
        self.rate = rate
        self._clock = clock

    @abstractmethod
    async def hit(self, key: str) -> Decision:
        """Count one request of ``key`` and decide on it."""

    async def aclose(self) -> None:  # noqa: B027  (most backends hold nothing to close)
        """Release what the limiter holds (connections)."""

    def _window(self, now: float) -> tuple[int, float]:
        """The window index of ``now`` and the seconds left in it."""
        index = math.floor(now / self.rate.period)
        return index, (index + 1) * self.rate.period - now


class LocalRateLimiter(RateLimiter):
    """The counters of one process (``QUEUE_CONNECTION=embedded``)."""

    #: Above this many keys, the counters of past windows are dropped.
    PRUNE_ABOVE = 10_000

    def __init__(self, rate: Rate, clock: Callable[[], float] = time.time) -> None:
        super().__init__(rate, clock)
        self._counts: dict[str, tuple[int, int]] = {}
        self._lock = threading.Lock()

    async def hit(self, key: str) -> Decision:
        with self._lock:
            index, left = self._window(self._clock())
            window, hits = self._counts.get(key, (index, 0))
            hits = hits + 1 if window == index else 1
            self._counts[key] = (index, hits)
            if len(self._counts) > self.PRUNE_ABOVE:
                self._counts = {k: v for k, v in self._counts.items() if v[0] == index}
            return Decision.of(self.rate, hits, left)


class SqlRateLimiter(RateLimiter):
    """The counters in ``api_rate_limits`` (PostgreSQL, or SQLite for one host's processes).

    One statement per request, on the autocommit reader: the upsert takes the row's lock, so two
    processes counting the same key at once both count. Rows of past windows are deleted now
    and then (about one request in :attr:`PRUNE_ONE_IN`).
    """

    PRUNE_ONE_IN = 500

    def __init__(self, rate: Rate, database: Database, clock: Callable[[], float] = time.time) -> None:
        super().__init__(rate, clock)
        self._database = database

    async def hit(self, key: str) -> Decision:
        table = API_RATE_LIMITS
        index, left = self._window(self._clock())
        async with self._database.reader.connect() as conn:
            insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
            upsert = (
                insert(table)
                .values(key=key, window_index=index, hits=1)
                .on_conflict_do_update(
                    index_elements=[table.c.key],
                    set_={
                        # The row's old window decides: the same one counts on, another starts at 1.
                        "hits": sa.case((table.c.window_index == index, table.c.hits + 1), else_=1),
                        "window_index": index,
                    },
                )
                .returning(table.c.hits)
            )
            hits = int((await conn.execute(upsert)).scalar_one())
            if random.randrange(self.PRUNE_ONE_IN) == 0:  # spreads the cleanup over the processes
                await conn.execute(sa.delete(table).where(table.c.window_index < index))
        return Decision.of(self.rate, hits, left)


# KEYS: the caller's counter (HASH w = window index, n = hits). ARGV: period (seconds).
# Returns {hits, seconds left in the window}; the time is the Redis server's.
_HIT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local period = tonumber(ARGV[1])
local window = math.floor(now / period)
local hits
if tonumber(redis.call('HGET', KEYS[1], 'w')) == window then
  hits = redis.call('HINCRBY', KEYS[1], 'n', 1)
else
  redis.call('HSET', KEYS[1], 'w', window, 'n', 1)
  hits = 1
end
local left = (window + 1) * period - now
redis.call('PEXPIRE', KEYS[1], math.ceil(left * 1000) + 1000)
return {hits, tostring(left)}
"""


class RedisRateLimiter(RateLimiter):
    """The counters in Redis under ``prefix`` (``QUEUE_CONNECTION=redis``): one atomic script per request.

    The client is bound to the event loop that first uses it (the web app's).
    """

    def __init__(self, rate: Rate, client: Redis, prefix: str = "exams:submit-rate") -> None:
        super().__init__(rate)
        self._client = client
        self._prefix = prefix
        self._hit: AsyncScript = client.register_script(_HIT)

    @classmethod
    def from_url(cls, rate: Rate, url: str, prefix: str = "exams:submit-rate") -> RedisRateLimiter:
        """A limiter with its own connection pool to ``url``."""
        from core.redis_clients import async_client

        return cls(rate, async_client(url, socket_timeout=5, socket_connect_timeout=5), prefix)

    async def hit(self, key: str) -> Decision:
        result: Any = await self._hit(keys=[f"{self._prefix}:{key}"], args=[self.rate.period])
        hits, left = result
        return Decision.of(self.rate, int(hits), float(left))

    async def aclose(self) -> None:
        await self._client.aclose()
