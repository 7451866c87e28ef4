"""The AI guard: limits, 429 pauses and a circuit breaker shared by every process that calls the AI.

Before each AI request a job asks the guard for a *slot* (:meth:`AIGuard.try_start`) and, when the
request is over, tells it how it went (:meth:`AIGuard.finish`). The guard answers from state
shared by every worker process and host:

- at most ``AI_MAX_CONCURRENCY`` requests in flight: each granted slot is a *lease* that ends
  when the request ends, or by itself ``lease_seconds`` later (the AI timeout plus a margin), so
  a worker killed in the middle of a call cannot keep its slot;
- at most ``AI_RATE_LIMIT_PER_MINUTE`` requests started in any 60 s (``0``: no cap);
- a ``429`` pauses every request until its ``Retry-After`` has passed;
- after ``AI_CIRCUIT_FAILURES`` consecutive failed requests (timeouts, connection errors, 5xx)
  the circuit opens: no request for ``AI_CIRCUIT_SECONDS``, then one *trial* request (its own
  lease) decides: a success closes the circuit, a failure opens it again.

Three backends hold that state, picked by the composition root: :class:`RedisAIGuard` (one Lua
script per decision, so each is atomic across hosts), :class:`SqlAIGuard` (two small tables,
one short transaction per decision, no connection held in between) and :class:`LocalAIGuard`
(one process: the embedded worker). The local and SQL backends apply :class:`GuardRules`; the
Redis scripts apply the same rules in Lua.

Why not Dramatiq's ``ConcurrentRateLimiter``: it keeps a bare counter under one key, so a worker
killed while holding a slot leaks it for as long as other workers keep touching the key (each
acquire and release renews its TTL), and its ``WATCH``/``MULTI`` loops block the event loop.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, cast

import sqlalchemy as sa
import structlog
from advanced_alchemy.base import orm_registry
from sqlalchemy.dialects import postgresql, sqlite

from core import metrics
from core.settings import Settings

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.commands.core import AsyncScript

    from core.db import Database

__all__ = (
    "AI_GUARD_CALLS",
    "AI_GUARD_STATE",
    "AICircuitOpenError",
    "AIGuard",
    "AIGuardUnavailableError",
    "AISlotWaitExpiredError",
    "Admission",
    "GuardLimits",
    "GuardRules",
    "GuardState",
    "LocalAIGuard",
    "Outcome",
    "RedisAIGuard",
    "SqlAIGuard",
    "acquire",
    "new_token",
    "release",
)

log = structlog.get_logger("jobs.ai_guard")

#: How a granted request ended: answered; failed (counts towards the circuit); refused with a
#: ``429`` (pauses everyone, not a failure); or abandoned (cancelled: neither).
Outcome = Literal["success", "failure", "rate_limited", "abandoned"]

#: Seconds between two asks while every slot is taken (plus up to as much again at random).
SLOT_POLL_SECONDS = 0.1
_WINDOW_SECONDS = 60.0


@dataclass(frozen=True)
class GuardLimits:
    """The numbers the guard enforces."""

    max_concurrency: int = 50
    rate_per_minute: int = 0
    circuit_failures: int = 5
    circuit_seconds: float = 30.0
    #: How long a slot (or the trial) is held at most if its holder never says it is done.
    lease_seconds: float = 70.0
    #: Pause after a ``429`` that did not say how long (``Retry-After`` missing).
    default_pause: float = 1.0

    @classmethod
    def from_settings(cls, settings: Settings) -> GuardLimits:
        """The limits of ``settings``; a lease outlives the longest possible AI request."""
        return cls(
            max_concurrency=settings.ai_max_concurrency,
            rate_per_minute=settings.ai_rate_limit_per_minute,
            circuit_failures=settings.ai_circuit_failures,
            circuit_seconds=settings.ai_circuit_seconds,
            lease_seconds=settings.ai_api_timeout + 10.0,
        )


@dataclass(frozen=True)
class Admission:
    """The guard's answer to one ask.

    ``granted``: call now (``trial``: this is the half-open circuit's one trial call).
    ``wait``: every slot is taken, the rate cap is reached or a ``429`` pause runs: ask again
    after ``retry_in`` seconds. ``open``: the circuit is open; it may let a trial through in
    ``retry_in`` seconds.
    """

    kind: Literal["granted", "trial", "wait", "open"]
    retry_in: float = 0.0

    @property
    def granted(self) -> bool:
        """Whether the request may be sent now."""
        return self.kind in ("granted", "trial")

    @property
    def trial(self) -> bool:
        """Whether the request is the half-open circuit's trial."""
        return self.kind == "trial"


def new_token() -> str:
    """A fresh id for one request's slot."""
    return uuid.uuid4().hex


class AIGuard(ABC):
    """Grants and takes back AI request slots; see the module's description."""

    def __init__(self, limits: GuardLimits) -> None:
        self.limits = limits

    @abstractmethod
    async def try_start(self, token: str) -> Admission:
        """Take a slot for ``token`` if the limits, a pause and the circuit allow it."""

    @abstractmethod
    async def finish(self, token: str, outcome: Outcome, *, trial: bool, retry_after: float | None = None) -> bool:
        """Give back ``token``'s slot and record ``outcome``; return whether the circuit is open now."""

    async def aclose(self) -> None:  # noqa: B027  (most backends hold nothing to close)
        """Release what the guard holds (connections)."""


# --- The rules, on a snapshot of the state (local and SQL backends) ------------------------------


@dataclass
class GuardState:
    """The shared state besides the slots: the pause and the circuit (times in seconds)."""

    paused_until: float = 0.0
    failures: int = 0
    open_until: float = 0.0
    #: While a half-open trial runs, until when its lease lasts (0: no trial running).
    trial_until: float = 0.0


class GuardRules:
    """The decisions, given the state, the time and the slots' counts."""

    def __init__(self, limits: GuardLimits) -> None:
        self.limits = limits

    def circuit_open(self, state: GuardState) -> bool:
        """Open or half-open: the last ``circuit_failures`` calls all failed."""
        return state.failures >= self.limits.circuit_failures

    def admit(
        self, state: GuardState, now: float, in_flight: int, started: int, oldest_start: float | None
    ) -> Admission:
        """Whether a request may start (``started``: requests started in the last 60 s).

        A grant with kind ``trial`` also takes the trial's lease in ``state``.
        """
        limits = self.limits
        half_open = self.circuit_open(state)
        if half_open:
            if now < state.open_until:
                return Admission("open", state.open_until - now)
            if now < state.trial_until:
                return Admission("open", min(state.trial_until - now, 1.0))
        if now < state.paused_until:
            return Admission("wait", state.paused_until - now)
        if in_flight >= limits.max_concurrency:
            return Admission("wait", SLOT_POLL_SECONDS)
        if limits.rate_per_minute and started >= limits.rate_per_minute:
            first = oldest_start if oldest_start is not None else now
            return Admission("wait", max(first + _WINDOW_SECONDS - now, SLOT_POLL_SECONDS))
        if half_open:
            state.trial_until = now + limits.lease_seconds
            return Admission("trial")
        return Admission("granted")

    def record(
        self, state: GuardState, now: float, outcome: Outcome, *, trial: bool, retry_after: float | None
    ) -> None:
        """Change ``state`` for a request that ended with ``outcome``."""
        limits = self.limits
        if outcome == "success":
            state.failures, state.open_until, state.trial_until = 0, 0.0, 0.0
        elif outcome == "failure":
            state.failures += 1
            # Opens when the count reaches the threshold, or again when the trial failed; later
            # failures of calls sent before it opened leave the open period as it is.
            if trial or state.failures == limits.circuit_failures:
                state.open_until = now + limits.circuit_seconds
                state.trial_until = 0.0
        else:
            if outcome == "rate_limited":
                pause = limits.default_pause if retry_after is None else retry_after
                state.paused_until = max(state.paused_until, now + pause)
            if trial:
                state.trial_until = 0.0  # undecided: the next ask may try again


# --- In process (QUEUE_CONNECTION=embedded) --------------------------------------------------------


class LocalAIGuard(AIGuard):
    """The guard of one process; safe to share between its threads and event loops."""

    def __init__(self, limits: GuardLimits) -> None:
        super().__init__(limits)
        self._rules = GuardRules(limits)
        self._state = GuardState()
        self._leases: dict[str, float] = {}
        self._starts: deque[float] = deque()
        self._lock = threading.Lock()

    async def try_start(self, token: str) -> Admission:
        with self._lock:
            now = time.monotonic()
            self._leases = {t: until for t, until in self._leases.items() if until > now}
            while self._starts and self._starts[0] <= now - _WINDOW_SECONDS:
                self._starts.popleft()
            oldest = self._starts[0] if self._starts else None
            admission = self._rules.admit(self._state, now, len(self._leases), len(self._starts), oldest)
            if admission.granted:
                self._leases[token] = now + self.limits.lease_seconds
                self._starts.append(now)
            return admission

    async def finish(self, token: str, outcome: Outcome, *, trial: bool, retry_after: float | None = None) -> bool:
        with self._lock:
            self._leases.pop(token, None)
            self._rules.record(self._state, time.monotonic(), outcome, trial=trial, retry_after=retry_after)
            return self._rules.circuit_open(self._state)


# --- PostgreSQL (or SQLite) tables (QUEUE_CONNECTION=rabbitmq) ---------------------------------------

_STATE_NAME = "ai"

#: The pause and the circuit: one row, locked by every decision (times in epoch milliseconds).
AI_GUARD_STATE = sa.Table(
    "ai_guard_state",
    orm_registry.metadata,
    sa.Column("name", sa.String(32), primary_key=True),
    sa.Column("paused_until", sa.BigInteger, nullable=False),
    sa.Column("failures", sa.Integer, nullable=False),
    sa.Column("open_until", sa.BigInteger, nullable=False),
    sa.Column("trial_until", sa.BigInteger, nullable=False),
)
#: One row per request started in the last minute or still in flight (``lease_until`` 0 once done).
AI_GUARD_CALLS = sa.Table(
    "ai_guard_calls",
    orm_registry.metadata,
    sa.Column("token", sa.String(32), primary_key=True),
    sa.Column("started_at", sa.BigInteger, nullable=False),
    sa.Column("lease_until", sa.BigInteger, nullable=False),
)


def _ms(seconds: float) -> int:
    return round(seconds * 1000)


class SqlAIGuard(AIGuard):
    """The guard's state in two tables of the product's database (migration 0005).

    Each decision is one short transaction that starts by locking the state row (an ``UPDATE``,
    which serialises deciders on PostgreSQL and SQLite alike); nothing is held between asks.
    Times are the deciding host's clock (epoch milliseconds): keep the hosts on NTP.
    """

    def __init__(self, limits: GuardLimits, database: Database) -> None:
        super().__init__(limits)
        self._rules = GuardRules(limits)
        self._database = database

    async def _locked_state(self, conn: Any) -> GuardState:
        state = AI_GUARD_STATE
        lock = (
            sa.update(state)
            .where(state.c.name == _STATE_NAME)
            .values(name=state.c.name)
            .returning(state.c.paused_until, state.c.failures, state.c.open_until, state.c.trial_until)
        )
        row = (await conn.execute(lock)).first()
        if row is None:
            insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
            seed = {"name": _STATE_NAME, "paused_until": 0, "failures": 0, "open_until": 0, "trial_until": 0}
            await conn.execute(insert(state).values(**seed).on_conflict_do_nothing())
            row = (await conn.execute(lock)).one()
        return GuardState(row.paused_until / 1000, row.failures, row.open_until / 1000, row.trial_until / 1000)

    async def _save(self, conn: Any, guard: GuardState) -> None:
        await conn.execute(
            sa.update(AI_GUARD_STATE)
            .where(AI_GUARD_STATE.c.name == _STATE_NAME)
            .values(
                paused_until=_ms(guard.paused_until),
                failures=guard.failures,
                open_until=_ms(guard.open_until),
                trial_until=_ms(guard.trial_until),
            )
        )

    async def try_start(self, token: str) -> Admission:
        calls = AI_GUARD_CALLS
        async with self._database.engine.begin() as conn:
            guard = await self._locked_state(conn)
            now = time.time()
            now_ms, window_ms = _ms(now), _ms(now - _WINDOW_SECONDS)
            await conn.execute(sa.delete(calls).where(calls.c.lease_until <= now_ms, calls.c.started_at <= window_ms))
            counts = (
                await conn.execute(
                    sa.select(
                        sa.func.count().filter(calls.c.lease_until > now_ms),
                        sa.func.count().filter(calls.c.started_at > window_ms),
                        sa.func.min(calls.c.started_at).filter(calls.c.started_at > window_ms),
                    )
                )
            ).one()
            oldest = counts[2] / 1000 if counts[2] is not None else None
            admission = self._rules.admit(guard, now, counts[0], counts[1], oldest)
            if admission.granted:
                lease = _ms(now + self.limits.lease_seconds)
                await conn.execute(sa.insert(calls).values(token=token, started_at=now_ms, lease_until=lease))
                if admission.trial:
                    await self._save(conn, guard)
            return admission

    async def finish(self, token: str, outcome: Outcome, *, trial: bool, retry_after: float | None = None) -> bool:
        calls = AI_GUARD_CALLS
        async with self._database.engine.begin() as conn:
            guard = await self._locked_state(conn)
            # Kept (with no lease) while it counts towards the per-minute cap.
            await conn.execute(sa.update(calls).where(calls.c.token == token).values(lease_until=0))
            self._rules.record(guard, time.time(), outcome, trial=trial, retry_after=retry_after)
            await self._save(conn, guard)
            return self._rules.circuit_open(guard)


# --- Redis (QUEUE_CONNECTION=redis) ------------------------------------------------------------------

# KEYS: slots (ZSET token -> lease end), starts (ZSET token -> start), state (HASH).
# ARGV: token, max_concurrency, rate_per_minute, lease_seconds, circuit_failures, poll seconds.
# Returns {kind, retry_in}. The rules are GuardRules.admit's; the time is the Redis server's.
_TRY_START = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local limit, rate = tonumber(ARGV[2]), tonumber(ARGV[3])
local lease, threshold, poll = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local s = redis.call('HMGET', KEYS[3], 'paused_until', 'failures', 'open_until', 'trial_until')
local paused, failures = tonumber(s[1]) or 0, tonumber(s[2]) or 0
local open_until, trial_until = tonumber(s[3]) or 0, tonumber(s[4]) or 0
local half_open = failures >= threshold
if half_open then
  if now < open_until then return {'open', tostring(open_until - now)} end
  if now < trial_until then return {'open', tostring(math.min(trial_until - now, 1))} end
end
if now < paused then return {'wait', tostring(paused - now)} end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= limit then return {'wait', tostring(poll)} end
if rate > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - 60)
  if redis.call('ZCARD', KEYS[2]) >= rate then
    local oldest = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
    return {'wait', tostring(math.max(tonumber(oldest[2]) + 60 - now, poll))}
  end
  redis.call('ZADD', KEYS[2], now, ARGV[1])
  redis.call('EXPIRE', KEYS[2], 120)
end
redis.call('ZADD', KEYS[1], now + lease, ARGV[1])
redis.call('EXPIRE', KEYS[1], math.ceil(lease) + 60)
if half_open then
  redis.call('HSET', KEYS[3], 'trial_until', now + lease)
  return {'trial', '0'}
end
return {'granted', '0'}
"""

# KEYS: slots, state. ARGV: token, outcome, trial (1/0), retry_after (or ''), circuit_failures,
# circuit_seconds, default_pause. Returns 1 when the circuit is open afterwards. GuardRules.record.
_FINISH = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local outcome, trial = ARGV[2], ARGV[3] == '1'
local threshold, seconds = tonumber(ARGV[5]), tonumber(ARGV[6])
redis.call('ZREM', KEYS[1], ARGV[1])
if outcome == 'success' then
  redis.call('HSET', KEYS[2], 'failures', 0, 'open_until', 0, 'trial_until', 0)
elseif outcome == 'failure' then
  local failures = redis.call('HINCRBY', KEYS[2], 'failures', 1)
  if trial or failures == threshold then
    redis.call('HSET', KEYS[2], 'open_until', now + seconds, 'trial_until', 0)
  end
else
  if outcome == 'rate_limited' then
    local pause = tonumber(ARGV[4]) or tonumber(ARGV[7])
    local paused = tonumber(redis.call('HGET', KEYS[2], 'paused_until')) or 0
    if now + pause > paused then redis.call('HSET', KEYS[2], 'paused_until', now + pause) end
  end
  if trial then redis.call('HSET', KEYS[2], 'trial_until', 0) end
end
local failures = tonumber(redis.call('HGET', KEYS[2], 'failures')) or 0
if failures >= threshold then return 1 end
return 0
"""


class RedisAIGuard(AIGuard):
    """The guard's state in Redis under ``prefix``: each decision is one atomic Lua script.

    The client is bound to the event loop that first uses it: build one guard per loop.
    """

    def __init__(self, limits: GuardLimits, client: Redis, prefix: str = "exams:ai-guard") -> None:
        super().__init__(limits)
        self._client = client
        self._keys = (f"{prefix}:slots", f"{prefix}:starts", f"{prefix}:state")
        self._try_start: AsyncScript = client.register_script(_TRY_START)
        self._finish: AsyncScript = client.register_script(_FINISH)

    @classmethod
    def from_url(cls, limits: GuardLimits, url: str, prefix: str = "exams:ai-guard") -> RedisAIGuard:
        """A guard with its own connection pool to ``url``."""
        from core.redis_clients import async_client

        return cls(limits, async_client(url, socket_timeout=5, socket_connect_timeout=5), prefix)

    async def try_start(self, token: str) -> Admission:
        limits = self.limits
        args: list[str | int | float] = [token, limits.max_concurrency, limits.rate_per_minute]
        args += [limits.lease_seconds, limits.circuit_failures, SLOT_POLL_SECONDS]
        kind, retry_in = await self._try_start(keys=list(self._keys), args=args)
        name = kind.decode() if isinstance(kind, bytes) else str(kind)
        return Admission(cast("Any", name), float(retry_in))

    async def finish(self, token: str, outcome: Outcome, *, trial: bool, retry_after: float | None = None) -> bool:
        limits = self.limits
        args: list[str | int | float] = [token, outcome, "1" if trial else "0"]
        args.append("" if retry_after is None else retry_after)
        args += [limits.circuit_failures, limits.circuit_seconds, limits.default_pause]
        is_open = await self._finish(keys=[self._keys[0], self._keys[2]], args=args)
        return bool(int(is_open))

    async def aclose(self) -> None:
        await self._client.aclose()


class AICircuitOpenError(Exception):
    """Raised by :func:`acquire` when the circuit is open and the caller would rather not wait."""


class AISlotWaitExpiredError(Exception):
    """Raised by :func:`acquire` when no slot came before the caller's deadline."""


class AIGuardUnavailableError(Exception):
    """Raised by :func:`acquire` when the guard's store (Redis, the database) cannot be asked."""


async def acquire(guard: AIGuard, token: str, *, wait_when_open: bool, deadline: float) -> Admission:
    """Ask ``guard`` until it grants ``token`` a slot; return the grant.

    Waits (asks again after the delay the guard gives, at most 1 s apart) while the slots are
    taken, the rate cap is reached or a ``429`` pause runs, and while the circuit is open if
    ``wait_when_open``; otherwise an open circuit raises :class:`AICircuitOpenError`. Past
    ``deadline`` (``time.monotonic()``) it raises :class:`AISlotWaitExpiredError`.
    """
    while True:
        try:
            admission = await guard.try_start(token)
        except Exception as exc:
            raise AIGuardUnavailableError(f"{type(exc).__name__}: {exc}") from exc
        metrics.AI_CIRCUIT_OPEN.set(1 if admission.kind in ("open", "trial") else 0)
        if admission.granted:
            return admission
        if admission.kind == "open" and not wait_when_open:
            raise AICircuitOpenError
        now = time.monotonic()
        if now >= deadline:
            raise AISlotWaitExpiredError
        # Jitter spreads the waiters' asks, so that they do not all come back at once.
        delay = min(admission.retry_in, 1.0) + random.uniform(0.0, SLOT_POLL_SECONDS)
        await asyncio.sleep(max(min(delay, deadline - now), 0.01))


async def release(guard: AIGuard, token: str, outcome: Outcome, *, trial: bool, retry_after: float | None) -> None:
    """Give back a slot :func:`acquire` granted; a store that cannot be reached lets the lease lapse."""
    try:
        is_open = await asyncio.shield(guard.finish(token, outcome, trial=trial, retry_after=retry_after))
    except Exception as exc:  # noqa: BLE001  (the lease ends by itself; the job goes on)
        log.warning("AI guard slot not released", outcome=outcome, error=f"{type(exc).__name__}: {exc}")
        return
    metrics.AI_CIRCUIT_OPEN.set(1 if is_open else 0)
