"""Live job updates (``jobs.live``): a change is published once and fanned out to every watcher.

In process: watchers of one job share one read per change (counted on the reader's engine),
shared queries run once for all their viewers, and a lost notification is healed by the slow
re-read. Across processes: ``exams jobs cancel`` in another process reaches an open event stream
through PostgreSQL's NOTIFY, and the listener resumes after PostgreSQL drops it. Over HTTP: a
client that reconnects with ``Last-Event-ID`` still gets the final event.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from sqlalchemy import event, text

from core.db import Database
from core.settings import Settings, load_settings
from jobs.live import ChangeHub, HubChanges, JobWatch, LiveJobs, PostgresChanges, publish_job_changes, status_events
from jobs.models import ExamProcessingJob, utcnow
from jobs.services import JobService
from server.migrate import run_migrations
from support import MATH_ANSWERS, NO_ENV_FILE, REPO, ExamsApp, ExamsServer, run_exams

pytestmark = pytest.mark.timeout(60)

STATUS = "/api/exam-results/status"


@pytest.fixture(autouse=True)
def _published() -> None:
    publish_job_changes()  # what every process's Wiring does


@pytest.fixture
async def writer(settings: Settings) -> AsyncIterator[Database]:
    """A second engine for the writes, so that the reader's engine counts the live reads alone."""
    database = Database.from_settings(settings)
    yield database
    await database.dispose()


def count_job_reads(database: Database) -> Callable[[], int]:
    """How many SELECTs of ``exam_processing_jobs`` this engine has run since now."""
    seen = [0]

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "FROM exam_processing_jobs" in statement:
            seen[0] += 1

    event.listen(database.engine.sync_engine, "before_cursor_execute", count)
    return lambda: seen[0]


async def store_job(database: Database) -> uuid.UUID:
    job = ExamProcessingJob(
        exam_code="MATH-101",
        student_id="s-live",
        answers=dict(MATH_ANSWERS),
        status="processing",
        current_step="getting_ai_recommendations",
        progress=20,
        attempts=1,
        heartbeat_at=utcnow(),
    )
    async with database.transaction() as session:
        session.add(job)
    return job.job_id


async def set_progress(database: Database, job_id: uuid.UUID, progress: int) -> None:
    async with database.transaction() as session:
        job = await JobService(session=session).get_by_job_id(job_id)
        assert job is not None
        job.update_progress(progress, utcnow())


def source_for(settings: Settings) -> PostgresChanges | HubChanges:
    if settings.database_url.startswith("postgresql"):
        return PostgresChanges(settings.database_url)
    return HubChanges()


async def next_progress(watch: JobWatch, timeout: float = 10.0) -> int:
    async with asyncio.timeout(timeout):
        await watch.changed()
    job = await watch.current()
    assert job is not None
    return job.progress


async def until_listening(live: LiveJobs) -> None:
    source = live.source
    if isinstance(source, PostgresChanges):
        async with asyncio.timeout(10):
            while not source.listening:
                await asyncio.sleep(0.02)


async def test_watchers_of_one_job_share_one_read_per_change(
    db: Database, writer: Database, settings: Settings
) -> None:
    job_id = await store_job(writer)
    reads = count_job_reads(db)
    live = LiveJobs(db, source_for(settings), min_read_interval=0.0, resync_seconds=3600)
    await live.start()
    try:
        await until_listening(live)
        watches = [live.watch(job_id) for _ in range(5)]
        firsts = [await watch.current() for watch in watches]
        assert {job.progress for job in firsts if job is not None} == {20}
        assert reads() == 1, "one read for five new watchers"

        for progress in (30, 45, 60):
            await set_progress(writer, job_id, progress)
            assert [await next_progress(watch) for watch in watches] == [progress] * 5

        assert reads() == 4, "one read per change, not one per watcher"
        assert live.notifications >= 3
        en, encoded = watches[0].document("en")
        assert (en.progress, en.current_step_label) == (60, "Getting AI recommendations")
        assert json.loads(encoded)["progress"] == 60
        assert watches[1].document("en")[1] is encoded, "encoded once per language, shared"
        assert watches[0].document("ar")[0].current_step_label != en.current_step_label
        for watch in watches:
            watch.close()
        assert live.watched == 0
    finally:
        await live.stop()


@pytest.mark.parametrize("settings", ["sqlite"], indirect=True)
async def test_a_lost_notification_is_healed_by_the_slow_reread(db: Database, writer: Database) -> None:
    job_id = await store_job(writer)
    # A hub nobody publishes to: every notification is lost.
    live = LiveJobs(db, HubChanges(ChangeHub()), min_read_interval=0.0, resync_seconds=0.3)
    await live.start()
    try:
        with live.watch(job_id) as watch:
            await watch.current()
            await set_progress(writer, job_id, 55)
            assert await next_progress(watch) == 55
            assert live.notifications == 0
    finally:
        await live.stop()


@pytest.mark.parametrize("settings", ["sqlite"], indirect=True)
async def test_a_stream_that_ends_early_stops_watching(db: Database, writer: Database) -> None:
    job_id = await store_job(writer)
    live = LiveJobs(db, HubChanges(), min_read_interval=0.0)
    await live.start()
    try:
        stream = status_events(live.watch(job_id), "en")
        head = await anext(stream)
        assert head.startswith(b"retry: 2000\r\nid: 1\r\nevent: progress\r\ndata: {"), head
        assert live.watched == 1
        await stream.aclose()  # the client went away
        assert live.watched == 0
    finally:
        await live.stop()


@pytest.mark.parametrize("settings", ["sqlite"], indirect=True)
async def test_viewers_of_one_query_share_each_run(db: Database) -> None:
    runs = [0]

    async def load() -> int:
        runs[0] += 1
        return runs[0]

    hub = ChangeHub()
    live = LiveJobs(db, HubChanges(hub), query_interval=0.05, resync_seconds=3600)
    await live.start()
    try:
        viewers = [live.query(("jobs", "page-1"), load) for _ in range(3)]
        async with asyncio.timeout(10):
            assert [await viewer.next() for viewer in viewers] == [1, 1, 1]
            hub.publish(uuid.uuid4(), 2)  # any job changed
            assert [await viewer.next() for viewer in viewers] == [2, 2, 2]
        assert runs[0] == 2
        other = live.query(("jobs", "page-2"), load)
        async with asyncio.timeout(10):
            assert await other.next() == 3
    finally:
        await live.stop()


@pytest.mark.parametrize("settings", ["postgresql"], indirect=True)
async def test_the_listener_resumes_after_postgresql_drops_it(
    db: Database, writer: Database, settings: Settings
) -> None:
    job_id = await store_job(writer)
    live = LiveJobs(db, source_for(settings), min_read_interval=0.0, resync_seconds=3600)
    await live.start()
    try:
        await until_listening(live)
        with live.watch(job_id) as watch:
            await watch.current()
            async with writer.engine.connect() as connection:
                await connection.execute(
                    text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE 'LISTEN%'")
                )
                await connection.commit()
            await set_progress(writer, job_id, 70)  # written while nobody listens: its notification is lost
            assert await next_progress(watch, timeout=30) == 70  # read again once listening again
    finally:
        await live.stop()


# --- Over HTTP: the web process and another process ---------------------------------------------------


def read_stream(response: httpx.Response) -> list[dict[str, str]]:
    events: list[dict[str, str]] = []
    fields: dict[str, str] = {}
    for line in response.iter_lines():
        if line == "":
            if "data" in fields:
                events.append(fields)
            fields = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(":")
            fields[name] = value.removeprefix(" ")
    return events


@pytest.mark.postgres
def test_a_cancel_by_another_process_reaches_the_open_stream(make_app: Callable[..., ExamsApp], pg_url: str) -> None:
    app = make_app(DATABASE_URL=pg_url)
    live: LiveJobs = app.http.app.state.admin_services.live
    live.resync_seconds = 3600  # only a notification can deliver the change
    job_id = asyncio.run(_pending_job(app.settings))
    events: list[dict[str, str]] = []

    def listen() -> None:
        with app.http.stream("GET", f"{STATUS}/{job_id}/events") as response:
            events.extend(read_stream(response))

    reader = threading.Thread(target=listen)
    reader.start()
    deadline = time.monotonic() + 10
    while live.watched == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert live.watched == 1

    out = run_exams(["jobs", "cancel", job_id], {"DATABASE_URL": pg_url, "LOG_FORMAT": "json"})
    assert "cancelled" in out.stdout
    reader.join(30)

    assert [e["event"] for e in events] == ["progress", "progress", "cancelled"], events
    docs = [json.loads(e["data"]) for e in events]
    assert [doc["status"] for doc in docs] == ["pending", "cancelled", "cancelled"]
    assert live.notifications >= 1


async def _pending_job(settings: Settings) -> str:
    """A pending job that no worker will pick up soon (its message counts as just sent)."""
    database = Database.from_settings(settings)
    try:
        async with database.transaction() as session:
            job = ExamProcessingJob(
                exam_code="MATH-101", student_id="s-live", answers=dict(MATH_ANSWERS), enqueued_at=utcnow()
            )
            session.add(job)
        return str(job.job_id)
    finally:
        await database.dispose()


def test_a_client_reconnecting_with_last_event_id_gets_the_final_event(app_session: ExamsApp) -> None:
    job_id = app_session.submitted()
    url = f"{STATUS}/{job_id}/events"
    with app_session.http.stream("GET", url) as response:
        first = read_stream(response)
    assert [e["event"] for e in first][-1] == "completed"
    last_progress = [e for e in first if e["event"] == "progress"][-1]

    # Dropped after the last progress event, before the final one: the reconnection (as a
    # browser's EventSource does it) still ends with the final event.
    with app_session.http.stream("GET", url, headers={"Last-Event-ID": last_progress["id"]}) as response:
        again = read_stream(response)

    assert [e["event"] for e in again] == ["progress", "completed"]
    assert [json.loads(e["data"]) for e in again] == [json.loads(first[-1]["data"])] * 2
    assert [e["id"] for e in again] == [last_progress["id"], first[-1]["id"]]


def test_a_job_finishing_while_its_client_is_away_ends_the_reconnected_stream(
    make_server: Callable[..., ExamsServer],
) -> None:
    """The connection drops while the job is still pending; it completes meanwhile; the
    reconnection (``Last-Event-ID`` of the last event seen) gets the final state and event.
    Over a real socket: a client going away mid-stream is what this is about."""
    server = make_server()
    settings = load_settings({"DATABASE_URL": server.env["DATABASE_URL"]}, env_file=NO_ENV_FILE)
    job_id = asyncio.run(_pending_job(settings))
    url = f"{server.base_url}{STATUS}/{job_id}/events"
    seen: dict[str, str] = {}
    with httpx.stream("GET", url, timeout=10) as response:
        for line in response.iter_lines():  # the first event, then the client goes away
            if line == "" and "data" in seen:
                break
            name, _, value = line.partition(":")
            seen[name] = value.removeprefix(" ")
    assert seen["event"] == "progress"
    assert json.loads(seen["data"])["status"] == "pending"

    asyncio.run(_complete(settings, job_id))
    with httpx.stream("GET", url, headers={"Last-Event-ID": seen["id"]}, timeout=30) as response:
        again = read_stream(response)

    assert [e["event"] for e in again] == ["progress", "completed"]
    assert [json.loads(e["data"])["status"] for e in again] == ["completed", "completed"]
    assert json.loads(again[-1]["data"])["result"]["score"] == 9


async def _complete(settings: Settings, job_id: str) -> None:
    """Complete a pending job as a worker would have, without one."""
    database = Database.from_settings(settings)
    try:
        async with database.transaction() as session:
            job = await JobService(session=session).get_by_job_id(uuid.UUID(job_id))
            assert job is not None
            now = utcnow()
            job.status, job.current_step, job.progress = "completed", "completed", 100
            job.started_at, job.completed_at, job.attempts = now, now, 1
            job.result = {"score": 9, "max_score": 10, "percentage": 90.0, "grade": "A", "recommendations": []}
    finally:
        await database.dispose()


@pytest.mark.postgres
async def test_postgresql_announces_changes_made_outside_the_orm(pg_url: str) -> None:
    """The table's trigger (migration 0007) notifies: raw SQL is heard, a heartbeat alone is not."""
    import asyncpg

    settings = load_settings({"DATABASE_URL": pg_url}, env_file=NO_ENV_FILE)
    await asyncio.to_thread(run_migrations, settings)
    database = Database.from_settings(settings)
    heard: asyncio.Queue[str] = asyncio.Queue()
    listener = await asyncpg.connect(pg_url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        job_id = await store_job(database)
        await listener.add_listener("exam_jobs", lambda *args: heard.put_nowait(args[-1]))
        async with database.transaction() as session:
            await session.execute(
                text("UPDATE exam_processing_jobs SET heartbeat_at = now(), version = version + 1 WHERE job_id = :id"),
                {"id": job_id},
            )
            await session.execute(
                text("UPDATE exam_processing_jobs SET progress = 55, version = version + 1 WHERE job_id = :id"),
                {"id": job_id},
            )
        async with asyncio.timeout(10):
            payload = await heard.get()
        assert payload == f"{job_id} 3"
        await asyncio.sleep(0.3)
        assert heard.empty(), "the heartbeat-only update announced nothing"
    finally:
        await listener.close()
        await database.dispose()


def test_the_trigger_watches_the_columns_the_process_watches() -> None:
    import importlib.util

    from jobs.live import WATCHED_COLUMNS

    path = next((REPO / "src" / "server" / "migrations" / "versions").glob("*_0007.py"))
    spec = importlib.util.spec_from_file_location("migration_0007", path)
    assert spec is not None
    assert spec.loader is not None
    migration = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(migration)
    assert tuple(migration.WATCHED_COLUMNS) == tuple(WATCHED_COLUMNS)
