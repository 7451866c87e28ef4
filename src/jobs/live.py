"""Live job updates: each change is published once and fanned out to every watcher in a process.

**Publishing**. Inserting an ``exam_processing_jobs`` row, or changing what its status document
or the dashboard's job page shows (:data:`WATCHED_COLUMNS`), publishes ``(job_id, version)``:

- on PostgreSQL, the database does it: a row trigger (migration 0007) sends
  ``pg_notify('exam_jobs', '<job_id> <version>')`` inside the writing transaction. PostgreSQL
  delivers it to every listening process at commit and drops it on rollback, whichever process
  wrote the row (a worker, the web app, a CLI command, an operator's SQL), and a writer spends
  nothing on it;
- on any other database (SQLite: the single-process demo), this process publishes after the
  commit to :data:`LOCAL_CHANGES`, its in-memory hub: ORM writes through the listeners that
  :func:`publish_job_changes` installs (once per process, by the composition root), Core
  statements through :func:`publish_written`.

A write that changes nothing a reader sees (a heartbeat alone) publishes nothing.

**Watching** (:class:`LiveJobs`, one per web process). The process subscribes once: one
PostgreSQL ``LISTEN`` connection (:class:`PostgresChanges`), or the hub (:class:`HubChanges`).
All watchers of one job share a topic, which holds the job's latest row. A notification newer
than that row marks the topic due. One reader task reads every due topic in one query, at most
once per ``min_read_interval``, and wakes the topic's watchers, who all use that one row. Each
event stream therefore costs no database work of its own. The status document is encoded once
per language. A topic is also read again when it has been quiet for ``resync_seconds``, which
heals a lost notification or a writer this process cannot hear (a worker process on SQLite).
Every topic is read again after the listener reconnects.

:class:`LiveQuery` does the same for a query shared by viewers (the dashboard's jobs list). There
is one result per key. After any job change, the query runs again at most every ``query_interval``.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable
from datetime import datetime
from inspect import signature
from typing import Any, Final, Generic, Protocol, TypeVar
from uuid import UUID

import asyncpg  # type: ignore[import-untyped]
import msgspec
import structlog
from sqlalchemy import Row, event, inspect, select
from sqlalchemy.dialects.postgresql.asyncpg import PGDialect_asyncpg
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapper, Session, object_session

from core.db import Database
from core.retry import backoff_seconds
from jobs.documents import status_document
from jobs.models import ExamProcessingJob
from jobs.progress import FINAL_STATUSES
from jobs.schemas import StatusDocument
from jobs.services import JobStatusView

__all__ = (
    "CHANNEL",
    "LOCAL_CHANGES",
    "ChangeHub",
    "ChangeSource",
    "HubChanges",
    "JobSnapshot",
    "JobWatch",
    "LiveJobs",
    "PostgresChanges",
    "QueryWatch",
    "publish_job_changes",
    "publish_written",
    "status_events",
)

log = structlog.get_logger("jobs.live")

#: The PostgreSQL notification channel; the payload is ``"<job_id> <version>"``.
CHANNEL: Final = "exam_jobs"
#: Columns a reader sees (status document, dashboard job page): a write changing none of them is silent.
WATCHED_COLUMNS: Final = (
    "status",
    "progress",
    "current_step",
    "failed_step",
    "attempts",
    "result",
    "error_message",
    "error_code",
    "error_params",
    "started_at",
    "completed_at",
)
#: Seconds after which a watched job is read again although no notification came.
RESYNC_SECONDS: Final = 15.0
#: Least seconds between two reads of due jobs (each read covers every due job in one query).
MIN_READ_INTERVAL: Final = 0.25
#: Least seconds between two runs of one shared query after job changes.
QUERY_INTERVAL: Final = 1.0
#: An event stream with nothing to say sends a comment this often (keeps proxies from timing it out).
KEEPALIVE_SECONDS: Final = 15.0
#: The longest an API event stream stays open.
EVENTS_MAX_SECONDS: Final = 3600.0
#: The client's reconnection delay (milliseconds), sent with the first event.
RETRY_MILLISECONDS: Final = 2000
RETRY_FRAME: Final = b"retry: %d\r\n" % RETRY_MILLISECONDS
KEEPALIVE_FRAME: Final = b": keep-alive\r\n\r\n"
#: The row of a job as watchers see it: every column but the bulky ones nobody renders live.
_SNAPSHOT_QUERY = select(
    *(c for c in ExamProcessingJob.__table__.columns if c.name not in ("answers", "grading", "recommendations"))
)
_PENDING = "exams_live_changes"

Deliver = Callable[[UUID, int], None]


class JobSnapshot(JobStatusView, Protocol):
    """What a watcher gets of a job: the status document's columns and those of the dashboard's job page."""

    version: int
    failed_step: str | None
    heartbeat_at: datetime | None
    enqueued_at: datetime | None


# --- Publishing -----------------------------------------------------------------------------------


class ChangeHub:
    """This process's job changes (databases without LISTEN/NOTIFY), from any thread to the
    subscribers' event loops."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subscribers: list[tuple[asyncio.AbstractEventLoop, Deliver]] = []

    def subscribe(self, deliver: Deliver) -> Callable[[], None]:
        """Call ``deliver(job_id, version)`` on the running loop for every change; returns the unsubscribe."""
        entry = (asyncio.get_running_loop(), deliver)
        with self._lock:
            self._subscribers.append(entry)

        def unsubscribe() -> None:
            with self._lock, contextlib.suppress(ValueError):
                self._subscribers.remove(entry)

        return unsubscribe

    def publish(self, job_id: UUID, version: int) -> None:
        """Hand the change to every subscriber (thread-safe; never blocks)."""
        with self._lock:
            subscribers = list(self._subscribers)
        for loop, deliver in subscribers:
            with contextlib.suppress(RuntimeError):  # that loop has closed
                loop.call_soon_threadsafe(deliver, job_id, version)


#: The in-memory hub of this process.
LOCAL_CHANGES: Final = ChangeHub()
_install_lock = threading.Lock()


def _job_written(connection: Connection, job: ExamProcessingJob, *, inserted: bool) -> None:
    if connection.dialect.name == "postgresql":
        return  # the table's trigger notifies
    if not inserted:
        attributes = inspect(job).attrs
        if not any(attributes[name].history.has_changes() for name in WATCHED_COLUMNS):
            return
    session = object_session(job)
    if session is not None:
        session.info.setdefault(_PENDING, {})[job.job_id] = job.version


def _after_insert(_mapper: Mapper[Any], connection: Connection, job: ExamProcessingJob) -> None:
    _job_written(connection, job, inserted=True)


def _after_update(_mapper: Mapper[Any], connection: Connection, job: ExamProcessingJob) -> None:
    _job_written(connection, job, inserted=False)


def _after_commit(session: Session) -> None:
    pending: dict[UUID, int] | None = session.info.pop(_PENDING, None)
    for job_id, version in (pending or {}).items():
        LOCAL_CHANGES.publish(job_id, version)


def _after_rollback(session: Session) -> None:
    session.info.pop(_PENDING, None)


def publish_written(session: AsyncSession, changes: dict[UUID, int]) -> None:
    """Publish, after ``session`` commits, jobs that a Core statement changed in its transaction
    (ORM writes publish themselves; on PostgreSQL the table's trigger has done it)."""
    if changes and session.get_bind().dialect.name != "postgresql":
        session.info.setdefault(_PENDING, {}).update(changes)


def publish_job_changes() -> None:
    """Publish every job change this process writes (idempotent; called by the composition root)."""
    with _install_lock:
        if event.contains(ExamProcessingJob, "after_update", _after_update):
            return
        event.listen(ExamProcessingJob, "after_insert", _after_insert)
        event.listen(ExamProcessingJob, "after_update", _after_update)
        event.listen(Session, "after_commit", _after_commit)
        event.listen(Session, "after_rollback", _after_rollback)


# --- Where a process hears about changes ------------------------------------------------------------


class ChangeSource(Protocol):
    """Hears the job changes of every process that can reach this one."""

    async def run(self, deliver: Deliver, resync: Callable[[], None]) -> None:
        """Call ``deliver`` per change until cancelled; ``resync`` after anything may have been missed."""


class HubChanges:
    """The changes published in this process (SQLite; a worker process elsewhere is not heard)."""

    def __init__(self, hub: ChangeHub = LOCAL_CHANGES) -> None:
        self.hub = hub

    async def run(self, deliver: Deliver, resync: Callable[[], None]) -> None:
        """Subscribe to the hub until cancelled."""
        unsubscribe = self.hub.subscribe(deliver)
        try:
            await asyncio.Event().wait()
        finally:
            unsubscribe()


def _asyncpg_args(database_url: str) -> dict[str, Any]:
    """``asyncpg.connect``'s arguments for ``DATABASE_URL``, read as SQLAlchemy reads them (``?ssl=…``)."""
    _, found = PGDialect_asyncpg().create_connect_args(make_url(database_url))  # type: ignore[no-untyped-call]
    accepted = signature(asyncpg.connect).parameters
    return {name: value for name, value in found.items() if name in accepted}


def _parse(payload: str) -> tuple[UUID, int] | None:
    raw_id, _, raw_version = payload.partition(" ")
    try:
        return UUID(raw_id), int(raw_version)
    except ValueError:
        return None


class PostgresChanges:
    """One ``LISTEN exam_jobs`` connection (asyncpg, outside the pool), reconnected with back-off.

    After each (re)connection it asks for a resync: notifications sent while it was away are lost.
    A ``SELECT 1`` every ``ping_seconds`` notices a connection that died silently.
    """

    def __init__(self, database_url: str, *, ping_seconds: float = RESYNC_SECONDS) -> None:
        self.connect_args = _asyncpg_args(database_url)
        self.ping_seconds = ping_seconds
        #: Whether the LISTEN connection is up (for tests and logs).
        self.listening = False

    async def run(self, deliver: Deliver, resync: Callable[[], None]) -> None:
        """Listen until cancelled, reconnecting after any failure."""

        def notified(_connection: object, _pid: int, _channel: str, payload: str) -> None:
            change = _parse(payload)
            if change is not None:
                deliver(*change)

        failures = 0
        while True:
            try:
                connection = await asyncpg.connect(**self.connect_args, timeout=5)
            except Exception as exc:  # noqa: BLE001  (whatever stops it, the listener tries again)
                failures += 1
                if failures == 1:
                    log.warning("live updates: cannot listen to PostgreSQL", error=f"{type(exc).__name__}: {exc}")
                await asyncio.sleep(backoff_seconds(failures, base=1.0, cap=30.0))
                continue
            try:
                await self._listen(connection, notified, resync)
            except Exception as exc:  # noqa: BLE001  (meanwhile the 15 s re-read keeps the streams going)
                log.warning("live updates: lost the PostgreSQL listener", error=f"{type(exc).__name__}: {exc}")
            finally:
                self.listening = False
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(connection.close(), timeout=2)
            failures = 1
            await asyncio.sleep(backoff_seconds(failures, base=1.0, cap=30.0))

    async def _listen(self, connection: Any, notified: Callable[..., None], resync: Callable[[], None]) -> None:
        lost = asyncio.Event()
        connection.add_termination_listener(lambda _connection: lost.set())
        await connection.add_listener(CHANNEL, notified)
        self.listening = True
        log.info("live updates: listening to PostgreSQL", channel=CHANNEL)
        resync()
        while not lost.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.ping_seconds):
                    await lost.wait()
            if not lost.is_set():
                await connection.fetchval("SELECT 1", timeout=5)
        raise ConnectionError("the listening connection closed")


# --- Watching jobs ------------------------------------------------------------------------------------


class _Topic:
    """One watched job in this process: its latest row and its watchers."""

    def __init__(self, job_id: UUID) -> None:
        self.job_id = job_id
        self.row: JobSnapshot | None = None
        self.version = 0
        #: Read at least once; ``gone``: the job does not exist (any more).
        self.read = False
        self.gone = False
        self.error: BaseException | None = None
        self.ready = asyncio.Event()
        self.watchers: weakref.WeakSet[JobWatch] = weakref.WeakSet()
        self.last_read = 0.0
        self._documents: dict[str, tuple[StatusDocument, bytes]] = {}
        self._frames: dict[str, tuple[bytes, bytes | None]] = {}

    def update(self, row: JobSnapshot | None, now: float) -> None:
        self.last_read = now
        changed = False
        if row is None:
            changed, self.gone, self.row = not self.gone, True, None
        elif not self.read or row.version > self.version:
            changed, self.row, self.version = True, row, row.version
            self._documents.clear()
            self._frames.clear()
        self.read = True
        self.ready.set()
        if changed:
            for watch in list(self.watchers):
                watch.wake()

    def fail(self, error: BaseException) -> None:
        self.error = error
        self.ready.set()

    def document(self, locale: str) -> tuple[StatusDocument, bytes]:
        """The status document of the latest row in ``locale``, encoded once per row and language."""
        cached = self._documents.get(locale)
        if cached is None:
            assert self.row is not None
            doc = status_document(self.row, locale)
            cached = self._documents[locale] = (doc, msgspec.json.encode(doc))
        return cached

    def frames(self, locale: str) -> tuple[bytes, bytes | None]:
        """The latest row's ``progress`` event and, once final, its final event, encoded once for
        every stream in ``locale``."""
        cached = self._frames.get(locale)
        if cached is None:
            doc, encoded = self.document(locale)
            progress = _frame("progress", str(self.version), encoded)
            final = (
                _frame(doc.status, f"{self.version}-{doc.status}", encoded) if doc.status in FINAL_STATUSES else None
            )
            cached = self._frames[locale] = (progress, final)
        return cached


def _frame(name: str, event_id: str, data: bytes) -> bytes:
    """One server-sent event (``data`` is one line of JSON)."""
    return b"id: %s\r\nevent: %s\r\ndata: %s\r\n\r\n" % (event_id.encode(), name.encode(), data)


class JobWatch:
    """One watcher of one job (an event stream): the shared row, and a wake-up when it changes.

    Use it as a context manager (or call :meth:`close`); a watch that is dropped unclosed is
    forgotten at the next housekeeping.
    """

    __slots__ = ("__weakref__", "_live", "_seen", "_topic", "_woken")

    def __init__(self, live: LiveJobs, topic: _Topic) -> None:
        self._live = live
        self._topic = topic
        self._woken = asyncio.Event()
        self._seen = -1

    @property
    def job_id(self) -> UUID:
        """The watched job."""
        return self._topic.job_id

    @property
    def version(self) -> int:
        """The version of the row :meth:`current` returned last."""
        return self._seen

    def wake(self) -> None:
        self._woken.set()

    async def current(self) -> JobSnapshot | None:
        """The job's latest row (waiting for the first read); ``None`` when it does not exist.

        Raises the database's error when the first read failed.
        """
        topic = self._topic
        await topic.ready.wait()
        if topic.error is not None:
            raise topic.error
        self._seen = topic.version
        return topic.row

    async def changed(self) -> None:
        """Return once the row is newer than the one :meth:`current` returned last, or the job was deleted."""
        topic = self._topic
        while not topic.gone and topic.version <= self._seen:
            self._woken.clear()
            await self._woken.wait()

    def document(self, locale: str) -> tuple[StatusDocument, bytes]:
        """The status document of the latest row (the one :meth:`current` just returned) in ``locale``, and its JSON."""
        return self._topic.document(locale)

    def frames(self, locale: str) -> tuple[bytes, bytes | None]:
        """The latest row's ``progress`` event and, when final, its final event (shared, encoded once)."""
        return self._topic.frames(locale)

    def close(self) -> None:
        """Stop watching."""
        self._live._unwatch(self._topic, self)

    def __enter__(self) -> JobWatch:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


T = TypeVar("T")


class LiveQuery(Generic[T]):
    """A query's result shared by every viewer with the same key."""

    def __init__(self, key: Hashable, load: Callable[[], Awaitable[T]]) -> None:
        self.key = key
        self.load = load
        self.value: T | None = None
        #: How many times it ran (0: not yet).
        self.runs = 0
        self.dirty = False
        self.last_run = 0.0
        self.error: BaseException | None = None
        self.ready = asyncio.Event()
        self.watchers: weakref.WeakSet[QueryWatch[T]] = weakref.WeakSet()


class QueryWatch(Generic[T]):
    """One viewer of a :class:`LiveQuery` (a dashboard page's stream)."""

    __slots__ = ("__weakref__", "_live", "_query", "_seen", "_woken")

    def __init__(self, live: LiveJobs, query: LiveQuery[T]) -> None:
        self._live = live
        self._query = query
        self._woken = asyncio.Event()
        self._seen = 0

    def wake(self) -> None:
        self._woken.set()

    async def next(self) -> T:
        """The result once it is newer than the last one returned (the first: once it ran)."""
        query = self._query
        await query.ready.wait()
        if query.error is not None:
            raise query.error
        while query.runs <= self._seen:
            self._woken.clear()
            await self._woken.wait()
        self._seen = query.runs
        return query.value  # type: ignore[return-value]  # set before runs is counted

    def close(self) -> None:
        """Stop watching."""
        self._query.watchers.discard(self)

    def __enter__(self) -> QueryWatch[T]:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


class LiveJobs:
    """The fan-out of one web process: topics per watched job, shared queries, one subscription.

    Start it on the app's start-up and stop it on shutdown. Every method runs on that event loop.
    """

    def __init__(
        self,
        database: Database,
        source: ChangeSource,
        *,
        resync_seconds: float = RESYNC_SECONDS,
        min_read_interval: float = MIN_READ_INTERVAL,
        query_interval: float = QUERY_INTERVAL,
    ) -> None:
        self.database = database
        self.source = source
        self.resync_seconds = resync_seconds
        self.min_read_interval = min_read_interval
        self.query_interval = query_interval
        #: Notifications heard, reads of due jobs and shared-query runs (figures for tests and the benchmark).
        self.notifications = 0
        self.reads = 0
        self.query_runs = 0
        self._topics: dict[UUID, _Topic] = {}
        self._due: set[UUID] = set()
        #: Topics nobody has read yet: their first watcher is waiting, so they skip the pause.
        self._first: set[UUID] = set()
        self._queries: dict[Hashable, LiveQuery[Any]] = {}
        self._reader_wake = asyncio.Event()
        self._first_wake = asyncio.Event()
        self._housekeeping_wake = asyncio.Event()
        self._last_read = 0.0
        self._failing = False
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Subscribe and start the reader (once)."""
        if self._tasks:
            return
        self._tasks = [
            asyncio.create_task(self.source.run(self._notified, self.resync_all), name="live-source"),
            asyncio.create_task(self._read_loop(), name="live-reader"),
            asyncio.create_task(self._housekeeping(), name="live-housekeeping"),
        ]

    async def stop(self) -> None:
        """Unsubscribe and stop the reader."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    @property
    def watched(self) -> int:
        """How many jobs are watched in this process."""
        return len(self._topics)

    def watch(self, job_id: UUID) -> JobWatch:
        """Watch a job: subscribed now, so nothing written after the first read is missed."""
        topic = self._topics.get(job_id)
        if topic is None:
            topic = self._topics[job_id] = _Topic(job_id)
            self._first.add(job_id)
            self._first_wake.set()
            self._reader_wake.set()
        watch = JobWatch(self, topic)
        topic.watchers.add(watch)
        return watch

    def query(self, key: Hashable, load: Callable[[], Awaitable[T]]) -> QueryWatch[T]:
        """Watch the result of ``load()``, shared with every viewer of the same ``key``."""
        query: LiveQuery[T] | None = self._queries.get(key)
        if query is None:
            query = self._queries[key] = LiveQuery(key, load)
            self._housekeeping_wake.set()
        watch = QueryWatch(self, query)
        query.watchers.add(watch)
        return watch

    def resync_all(self) -> None:
        """Read every watched job and run every query again (after notifications may have been lost)."""
        for job_id in self._topics:
            self._make_due(job_id)
        for query in self._queries.values():
            query.dirty = True

    def _notified(self, job_id: UUID, version: int) -> None:
        self.notifications += 1
        for query in self._queries.values():
            query.dirty = True
        topic = self._topics.get(job_id)
        if topic is not None and not (topic.read and version <= topic.version):
            self._make_due(job_id)

    def _make_due(self, job_id: UUID) -> None:
        self._due.add(job_id)
        self._reader_wake.set()

    def _unwatch(self, topic: _Topic, watch: JobWatch) -> None:
        topic.watchers.discard(watch)
        if not topic.watchers and self._topics.get(topic.job_id) is topic:
            del self._topics[topic.job_id]

    async def _read_loop(self) -> None:
        while True:
            await self._reader_wake.wait()
            # Reads for changes: at most one per min_read_interval, each covering every due job.
            # A first read (a new watcher is waiting) goes at once, and takes the due ones along.
            pause = self._last_read + self.min_read_interval - time.monotonic()
            if pause > 0 and not self._first:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(pause):
                        await self._first_wake.wait()
            self._reader_wake.clear()
            self._first_wake.clear()
            ids = [job_id for job_id in self._due | self._first if job_id in self._topics]
            self._due.clear()
            self._first.clear()
            if not ids:
                continue
            self._last_read = time.monotonic()
            try:
                rows = await self._fetch(ids)
            except Exception as exc:  # noqa: BLE001  (the database is away: watchers wait, new ones get the error)
                self._read_failed(ids, exc)
                continue
            if self._failing:
                self._failing = False
                log.info("live updates: reading jobs again")
            now = time.monotonic()
            for job_id in ids:
                topic = self._topics.get(job_id)
                if topic is not None:
                    topic.update(rows.get(job_id), now)

    async def _fetch(self, ids: list[UUID]) -> dict[UUID, JobSnapshot]:
        found: dict[UUID, JobSnapshot] = {}
        async with self.database.reader.connect() as connection:
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                result = await connection.execute(_SNAPSHOT_QUERY.where(ExamProcessingJob.job_id.in_(chunk)))
                for row in result:
                    found[row.job_id] = _snapshot(row)
        self.reads += 1
        return found

    def _read_failed(self, ids: list[UUID], error: BaseException) -> None:
        if not self._failing:
            self._failing = True
            log.warning("live updates: cannot read jobs", error=f"{type(error).__name__}: {error}")
        for job_id in ids:
            topic = self._topics.get(job_id)
            if topic is None:
                continue
            if topic.read:
                self._due.add(job_id)  # tried again at the next housekeeping
            else:
                del self._topics[job_id]  # its first watchers answer the error (503)
                topic.fail(error)

    async def _housekeeping(self) -> None:
        tick = min(1.0, self.resync_seconds / 2, self.query_interval)
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(tick):
                    await self._housekeeping_wake.wait()
            self._housekeeping_wake.clear()
            now = time.monotonic()
            for job_id, topic in list(self._topics.items()):
                if not topic.watchers:  # every watch was dropped unclosed
                    del self._topics[job_id]
                elif topic.read and now - topic.last_read >= self.resync_seconds:
                    self._due.add(job_id)
            if self._due:
                self._reader_wake.set()
            await self._run_queries(now)

    async def _run_queries(self, now: float) -> None:
        for key, query in list(self._queries.items()):
            if not query.watchers:
                del self._queries[key]
                continue
            since = now - query.last_run
            if query.runs and not (query.dirty and since >= self.query_interval) and since < self.resync_seconds:
                continue
            query.dirty = False
            query.last_run = now
            try:
                value = await query.load()
            except Exception as exc:  # noqa: BLE001  (kept: the viewers keep the last result, new ones get the error)
                log.warning("live updates: shared query failed", error=f"{type(exc).__name__}: {exc}")
                if not query.runs:
                    del self._queries[key]
                    query.error = exc
                    query.ready.set()
                continue
            query.value = value
            query.runs += 1
            self.query_runs += 1
            query.ready.set()
            for watch in list(query.watchers):
                watch.wake()


def _snapshot(row: Row[Any]) -> JobSnapshot:
    return row  # a Row has the columns as attributes


# --- The API's event stream -----------------------------------------------------------------------------


async def status_events(
    watch: JobWatch,
    locale: str,
    *,
    max_seconds: float = EVENTS_MAX_SECONDS,
    keepalive: float = KEEPALIVE_SECONDS,
) -> AsyncIterator[bytes]:
    """SPEC's event stream of a watched job, as bytes: ``progress`` with the current document,
    one ``progress`` per change, then ``completed``, ``failed`` or ``cancelled``, then the end.

    ``id`` is the job's version (``<version>-<status>`` for the final event); the events are
    encoded once per change and language, and shared by every stream of the job. A comment is
    sent after ``keepalive`` seconds without an event. The stream ends when the job is deleted,
    or after ``max_seconds``.
    """
    with watch:
        deadline = time.monotonic() + max_seconds
        head = RETRY_FRAME
        last: bytes | None = None
        row = await watch.current()
        while row is not None:
            progress, final = watch.frames(locale)
            _, encoded = watch.document(locale)
            # One write per change: the first also carries the retry delay, the last its final event.
            chunk = head + (progress if encoded != last else b"") + (final or b"")
            head, last = b"", encoded
            if chunk:
                yield chunk
            if final is not None:
                return
            async for _ in _quiet(watch, deadline, keepalive):
                yield KEEPALIVE_FRAME
            if time.monotonic() >= deadline:
                return
            row = await watch.current()


async def _quiet(watch: JobWatch, deadline: float, keepalive: float) -> AsyncIterator[None]:
    """Wait for the next change, yielding every ``keepalive`` seconds of silence; ends at ``deadline``."""
    while (remaining := deadline - time.monotonic()) > 0:
        try:
            async with asyncio.timeout(min(keepalive, remaining)):
                await watch.changed()
        except TimeoutError:
            if time.monotonic() < deadline:
                yield None
            continue
        return
