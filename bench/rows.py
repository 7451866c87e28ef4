"""Whether the hot reads stay flat from 1,000 to 1,000,000 job rows, and what the cleanup of
500,000 old rows costs (issue 9, item 7).

One fresh PostgreSQL database grows size by size (``--sizes``, default 1k, 10k, 100k, 1M; a
single ``INSERT … SELECT generate_series`` per 100,000 rows). The rows look like a busy week and
its older history: job ids are ``md5('job-' || g)``, about 1 % failed (with real error codes and
messages), a few pending, processing and cancelled, the rest completed with the grading, the
recommendations and the result documents the pipeline stores (built here with the product's own
grader, about 3 KB of JSON a row). Every odd row finished more than ``JOB_RETENTION_DAYS`` ago,
every even row within it, so at 1,000,000 rows exactly 500,000 rows are due for the cleanup.

At each size, through the product's own functions, interleaved with ``SELECT 1`` on the same
database (the baseline, measured in the same loop so that both see the same noise):

- the status lookup of a random existing job (``jobs.services.fetch_status`` on the autocommit
  reader, as ``GET /api/exam-results/status/{id}`` does), p50 and p99 over ``--lookups`` lookups;
- the dashboard's first page of jobs and of failed jobs (``jobs.admin_queries.list_jobs`` with the
  filters ``admin.filters.parse_filter`` makes for ``/admin/jobs`` and ``/admin/failed``), and the
  whole ``/admin/failed`` page's queries (failure groups, that page, the total count);
- a ``/metrics`` scrape's database work: ``MonitoringCache``'s snapshot as a scrape takes it
  (completed jobs recounted at most once a minute past 100,000 of them) plus the cleanup figures,
  and separately the snapshot with the completed recount.

Then, at the largest size, the product's cleanup (``jobs.maintenance.cleanup_finished``, the
scheduler's and ``exams jobs cleanup``'s path, default batch ``CLEANUP_BATCH``) deletes the old
rows, each batch timed; meanwhile a second engine in its own thread looks jobs up and submits
new ones (``JobService.submit``). Prints figures and plans; asserts nothing about time.

    .venv/bin/python bench/rows.py [--sizes 1000,10000,100000,1000000] [--repeat 20] [--lookups 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import platform
import random
import statistics
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import msgspec
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from admin.cleanup import CleanupMonitor  # noqa: E402
from admin.controllers import PAGE_SIZE  # noqa: E402
from admin.filters import parse_filter  # noqa: E402
from core.db import Database  # noqa: E402
from core.settings import Settings, load_settings  # noqa: E402
from exams.catalog import load_catalog_file  # noqa: E402
from exams.grading import grade  # noqa: E402
from jobs.admin_queries import count_matching, failure_groups, list_jobs  # noqa: E402
from jobs.errors import JobError  # noqa: E402
from jobs.maintenance import CLEANUP_BATCH, cleanup_finished  # noqa: E402
from jobs.models import utcnow  # noqa: E402
from jobs.monitoring import MonitoringCache  # noqa: E402
from jobs.services import JobService, Submission, fetch_status  # noqa: E402
from server.migrate import run_migrations  # noqa: E402
from server.wiring import Wiring  # noqa: E402
from support import MATH_ANSWERS, NO_ENV_FILE, SAMPLE_CATALOG, postgres_database  # noqa: E402
from timing import p99  # noqa: E402

SIZES = (1_000, 10_000, 100_000, 1_000_000)
FILL_CHUNK = 100_000
DAY = 86_400

# Row g (1-based). Odd rows finished 8 to 38 days ago (older than JOB_RETENTION_DAYS = 7: the
# cleanup's), even rows within the last 6 days, newer as g grows (the table grows in time order);
# pending and processing rows (1 in 1000 each) were created within the last hour. Failed: g % 200
# in (0, 1), i.e. 1 %, half of them old. :top is the largest size, so a row keeps its age whatever
# size the run stops at.
FILL = """
WITH v AS (
    SELECT (ord - 1)::int AS k, value->'answers' AS answers, value->'grading' AS grading,
           value->'recommendations' AS recommendations, value->'result' AS result
    FROM jsonb_array_elements(CAST(:variants AS jsonb)) WITH ORDINALITY AS t(value, ord)
), e AS (
    SELECT (ord - 1)::int AS k, value->>'step' AS step, value->>'code' AS code, value->'params' AS params,
           value->>'message' AS message
    FROM jsonb_array_elements(CAST(:errors AS jsonb)) WITH ORDINALITY AS t(value, ord)
), r AS (
    SELECT g,
        CASE WHEN g % 200 IN (0, 1) THEN 'failed'
             WHEN g % 2 = 1 THEN 'completed'
             WHEN g % 1000 = 2 THEN 'pending'
             WHEN g % 1000 = 4 THEN 'processing'
             WHEN g % 1000 = 6 THEN 'cancelled'
             ELSE 'completed' END AS status,
        CASE WHEN g % 1000 IN (2, 4) THEN now() - (g % 3600) * interval '1 second'
             WHEN g % 2 = 1 THEN now() - interval '8 days' - (CAST(:top AS bigint) - g) * CAST(:old_step AS float8)
                 * interval '1 second'
             ELSE now() - interval '2 minutes' - (CAST(:top AS bigint) - g) * CAST(:new_step AS float8)
                 * interval '1 second' END AS created
    FROM generate_series(CAST(:first AS bigint), CAST(:last AS bigint)) AS g
)
INSERT INTO exam_processing_jobs (job_id, exam_code, student_id, status, progress, current_step, failed_step,
    answers, locale, grading, recommendations, result, error_message, error_code, error_params, attempts,
    heartbeat_at, enqueued_at, started_at, completed_at, failed_at, idempotency_key, request_fingerprint,
    version, created_at, updated_at)
SELECT md5('job-' || r.g)::uuid, 'MATH-101', 's-' || (r.g % 50000), r.status,
    CASE r.status WHEN 'completed' THEN 100 WHEN 'pending' THEN 0 WHEN 'processing' THEN 45 ELSE 60 END,
    CASE r.status WHEN 'processing' THEN 'getting_ai_recommendations' WHEN 'pending' THEN 'queued'
        ELSE r.status END,
    CASE r.status WHEN 'failed' THEN e.step WHEN 'cancelled' THEN 'getting_ai_recommendations' END,
    v.answers, CASE WHEN r.g % 10 = 3 THEN 'ar' ELSE 'en' END,
    CASE WHEN r.status <> 'pending' THEN v.grading END,
    CASE WHEN r.status = 'completed' THEN v.recommendations END,
    CASE WHEN r.status = 'completed' THEN v.result END,
    e.message, e.code, e.params,
    CASE r.status WHEN 'failed' THEN 4 WHEN 'pending' THEN 0 ELSE 1 END,
    CASE WHEN r.status = 'processing' THEN now() END,
    r.created,
    CASE WHEN r.status <> 'pending' THEN r.created + interval '1 second' END,
    CASE WHEN r.status IN ('completed', 'failed', 'cancelled')
         THEN r.created + CASE r.status WHEN 'failed' THEN interval '5 minutes' ELSE interval '35 seconds' END END,
    CASE WHEN r.status = 'failed' THEN r.created + interval '5 minutes' END,
    CASE WHEN r.g % 3 = 0 THEN 'key-' || md5('key-' || r.g) END,
    md5('fp-' || r.g) || md5('fp2-' || r.g),
    CASE r.status WHEN 'completed' THEN 9 WHEN 'failed' THEN 14 WHEN 'pending' THEN 1 ELSE 6 END,
    r.created, r.created + interval '35 seconds'
FROM r JOIN v ON v.k = r.g % CAST(:n_variants AS int)
LEFT JOIN e ON r.status = 'failed' AND e.k = (r.g / 200) % CAST(:n_errors AS int)
"""

#: What an AI answers, about the length of the fake AI's and a real model's recommendations.
RECOMMENDATION_TEXTS = (
    "Review how to isolate the unknown in linear equations: undo additions and subtractions first, then "
    "divide both sides by the coefficient. Work through ten short exercises and check each answer by "
    "substituting it back into the original equation.",
    "Revisit the area and perimeter formulas for circles and polygons. Sketch each figure, label the "
    "radius or sides, and write down the units at every step so that centimetres and square centimetres "
    "are never mixed up.",
    "Your answers on photosynthesis show the main idea is there. Summarise the inputs (light, water, carbon "
    "dioxide) and the outputs (glucose, oxygen) in your own words, then explain where in the leaf each "
    "stage happens.",
)


def job_id(g: int) -> UUID:
    """The job id of row ``g`` (``md5('job-' || g)::uuid`` in the fill)."""
    return UUID(hashlib.md5(f"job-{g}".encode()).hexdigest())


def number(value: float) -> float | int:
    """Whole numbers as ints, as the pipeline's result shows them."""
    return int(value) if float(value).is_integer() else float(value)


def documents() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """JSON documents as the pipeline stores them (answers, grading, recommendations, result), in
    a few variants graded by the product's grader, and the failures as ``JobError`` renders them."""
    exam = next(e for e in load_catalog_file(SAMPLE_CATALOG) if e.code == "MATH-101")
    wrong: dict[str, Any] = {"q1": "a", "q2": ["a"], "q3": 3.0, "q4": False, "q5": "respiration"}
    variants = []
    for k in range(8):
        answers = {q: (MATH_ANSWERS[q] if (k >> i) % 2 == 0 or i > 2 else wrong[q]) for i, q in enumerate(MATH_ANSWERS)}
        if k % 3 == 2:
            answers["q4"] = False
        grading = msgspec.to_builtins(grade(exam, answers))
        items = [
            {"topic": t["topic"], "priority": ("high", "medium", "low")[i], "text": RECOMMENDATION_TEXTS[i]}
            for i, t in enumerate(grading["topics"])
        ]
        result = {
            "score": number(grading["score"]),
            "max_score": number(grading["max_score"]),
            "percentage": float(grading["percentage"]),
            "passed": bool(grading["passed"]),
            "topics": [
                {**t, "score": number(t["score"]), "max_score": number(t["max_score"])} for t in grading["topics"]
            ],
            "questions": [
                {**q, "awarded": number(q["awarded"]), "max": number(q["max"])} for q in grading["questions"]
            ],
            "recommendations": items,
            "recommendations_source": "ai",
            "processed_at": "2026-11-20T10:15:42.123456Z",
        }
        variants.append(
            {
                "answers": answers,
                "grading": grading,
                "recommendations": {"source": "ai", "items": items},
                "result": result,
            }
        )
    failures = (
        ("getting_ai_recommendations", JobError("ai_unavailable", {"reason": "HTTP 503"}).exhausted(4)),
        ("getting_ai_recommendations", JobError("ai_invalid_answer", {"error": "no JSON object"}).exhausted(4)),
        ("processing_answers", JobError("database_unavailable").exhausted(4)),
        ("getting_ai_recommendations", JobError("time_limit", {"seconds": 300}).exhausted(4)),
        ("validating_exam", JobError("exam_closed", {"exam_code": "MATH-101"})),
    )
    errors = [
        {"step": step, "code": err.code, "params": dict(err.params), "message": err.english} for step, err in failures
    ]
    return variants, errors


@contextmanager
def captured(engine: AsyncEngine) -> Iterator[list[tuple[str, Any]]]:
    """The SQL statements (and parameters) the engine sends while in the block."""
    seen: list[tuple[str, Any]] = []

    def hear(_conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any, _many: bool) -> None:
        seen.append((statement, parameters))

    event.listen(engine.sync_engine, "before_cursor_execute", hear)
    try:
        yield seen
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", hear)


class TimedDatabase(Database):
    """The product's :class:`Database` on the same engine, timing each ``transaction()`` block.

    ``cleanup_finished`` opens one per batch (DELETE … LIMIT, then COMMIT): its span, from the
    pool checkout to the end of the COMMIT, bounds how long that batch holds its row locks.
    """

    def __init__(self, engine: AsyncEngine) -> None:
        super().__init__(engine)
        self.spans: list[float] = []

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """The product's transaction, timed."""
        started = time.perf_counter()
        async with super().transaction() as session:
            yield session
        self.spans.append(time.perf_counter() - started)


class Prober:
    """A second engine on its own thread and event loop (another web process, as it were) that
    looks up jobs and submits new ones, recording latencies under the current ``phase``."""

    def __init__(self, settings: Settings, surviving: Callable[[random.Random], UUID]) -> None:
        self.settings = settings
        self.surviving = surviving
        self.phase = "idle"
        self.lookups: dict[str, list[float]] = {}
        self.submits: dict[str, list[float]] = {}
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def start(self) -> None:
        """Begin probing."""
        self._thread.start()

    def stop(self) -> None:
        """Stop and wait."""
        self._stop.set()
        self._thread.join()

    async def _run(self) -> None:
        database = Database.from_settings(self.settings)
        rng = random.Random(7)
        n = 0
        try:
            while not self._stop.is_set():
                phase = self.phase
                n += 1
                started = time.perf_counter()
                try:
                    if n % 10 == 0:
                        submission = Submission(exam_code="MATH-101", student_id=f"s-probe-{n}", answers=MATH_ANSWERS)
                        async with database.sessions() as session:
                            await JobService(session=session).submit(submission)
                        self.submits.setdefault(phase, []).append((time.perf_counter() - started) * 1000)
                    else:
                        async with database.reader.connect() as connection:
                            found = await fetch_status(connection, self.surviving(rng))
                        if found is None:
                            self.failures.append("a surviving job was not found")
                        self.lookups.setdefault(phase, []).append((time.perf_counter() - started) * 1000)
                except Exception as exc:  # noqa: BLE001  (counted and printed: the service did not answer)
                    self.failures.append(f"{type(exc).__name__}: {exc}"[:200])
                await asyncio.sleep(0.005)
        finally:
            await database.dispose()


async def fill(engine: AsyncEngine, first: int, last: int, top: int, variants: str, errors: str) -> None:
    """Insert rows ``first``..``last`` (a transaction per 100,000) and VACUUM ANALYZE."""
    params: dict[str, Any] = {
        "variants": variants,
        "errors": errors,
        "n_variants": len(json.loads(variants)),
        "n_errors": len(json.loads(errors)),
        "top": top,
        "old_step": 30 * DAY / (top / 2),  # odd rows: spread over 30 days before the 8-days-ago mark
        "new_step": 6 * DAY / top,  # even rows: spread over the last 6 days
    }
    for lo in range(first, last + 1, FILL_CHUNK):
        async with engine.begin() as conn:
            # The fill stands for history: no NOTIFY per row from the job-change trigger (the
            # probes' submissions later fire it as in production). Only for this transaction.
            await conn.execute(text("SET LOCAL session_replication_role = replica"))
            await conn.execute(text(FILL), {**params, "first": lo, "last": min(lo + FILL_CHUNK - 1, last)})
    async with engine.execution_options(isolation_level="AUTOCOMMIT").connect() as conn:
        await conn.execute(text("VACUUM ANALYZE exam_processing_jobs"))


async def main(sizes: list[int], repeat: int, lookups: int, url: str) -> None:
    settings = load_settings({"DATABASE_URL": url, "QUEUE_CONNECTION": "embedded"}, env_file=NO_ENV_FILE)
    await asyncio.to_thread(run_migrations, settings)
    database = Database.from_settings(settings)
    engine = database.engine
    # Filling and vacuuming a million rows take longer than the product's 30 s statement limit.
    filler = create_async_engine(settings.database_url, connect_args={"command_timeout": None})
    async with engine.connect() as conn:
        version = (await conn.execute(text("SHOW server_version"))).scalar_one()
        shared_buffers = (await conn.execute(text("SHOW shared_buffers"))).scalar_one()
    print(f"PostgreSQL {version} (shared_buffers {shared_buffers}); Python {platform.python_version()}; ", end="")
    print(f"{os.cpu_count()} CPUs; load average at start {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(
        f"sizes {', '.join(f'{s:,}' for s in sizes)}; {lookups} status lookups and {repeat} runs of the rest per size"
    )
    variant_docs, error_docs = documents()
    variants, errors = json.dumps(variant_docs), json.dumps(error_docs)
    row_json = statistics.mean(len(json.dumps(list(v.values()))) for v in variant_docs)
    print(f"a completed row carries {row_json:,.0f} bytes of JSON (answers, grading, recommendations, result)")

    broker = Wiring(settings).broker(worker=False)[0]
    cache = MonitoringCache(database, broker, settings)
    jobs_filter = parse_filter({}).flt  # what /admin/jobs lists without a query string
    failed_filter = parse_filter({"status": "failed"}).flt  # what /admin/failed lists
    stale_after = settings.job_stale_after

    async def select_one() -> None:
        async with database.reader.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def jobs_page() -> object:
        async with database.sessions() as session:
            return await list_jobs(session, jobs_filter, stale_after=stale_after, limit=PAGE_SIZE)

    async def failed_list() -> object:
        async with database.sessions() as session:
            return await list_jobs(session, failed_filter, stale_after=stale_after, limit=PAGE_SIZE)

    async def failed_page() -> object:  # AdminController.failed's queries, in its one session
        async with database.sessions() as session:
            groups = await failure_groups(session)
            page = await list_jobs(session, failed_filter, stale_after=stale_after, limit=PAGE_SIZE)
            return groups, page, await count_matching(session, failed_filter, stale_after=stale_after)

    async def scrape() -> object:  # metrics_endpoint's database work, neither cache reused
        snapshot = await cache._take()
        return snapshot, await CleanupMonitor(database).get()

    async def recount() -> object:  # the snapshot of the once-a-minute pass that counts completed jobs
        cache._completed_due = float("-inf")
        return await cache._take()

    figures = {
        "status p50": "status lookup p50",
        "status p99": "status lookup p99",
        "jobs page": "first page of jobs",
        "failed list": "first page of failed jobs",
        "failed page": "/admin/failed: groups + page + count",
        "scrape": "/metrics scrape (snapshot + cleanup figures)",
        "recount": "snapshot with the completed recount",
    }
    calls: dict[str, Callable[[], Awaitable[object]]] = {
        "jobs page": jobs_page,
        "failed list": failed_list,
        "failed page": failed_page,
        "scrape": scrape,
        "recount": recount,
    }
    results: dict[int, dict[str, float]] = {}
    baselines: dict[int, dict[str, float]] = {}
    filled = 0
    top = max(sizes)
    rng = random.Random(42)
    for size in sizes:
        started = time.perf_counter()
        await fill(filler, filled + 1, size, top, variants, errors)
        fill_s = time.perf_counter() - started
        filled = size
        async with engine.connect() as conn:
            table = (await conn.execute(text("SELECT pg_total_relation_size('exam_processing_jobs')"))).scalar_one()
        for _ in range(3):  # warm up (compiled statements, the pool, the caches)
            for call in (select_one, *calls.values()):
                await call()
        base: list[float] = []
        status: list[float] = []
        for _ in range(lookups):  # interleaved, so the baseline sees the same noise
            t0 = time.perf_counter()
            await select_one()
            t1 = time.perf_counter()
            async with database.reader.connect() as conn:
                found = await fetch_status(conn, job_id(rng.randint(1, size)))
            t2 = time.perf_counter()
            assert found is not None
            base.append((t1 - t0) * 1000)
            status.append((t2 - t1) * 1000)
        samples: dict[str, list[float]] = {name: [] for name in calls}
        page_base: list[float] = []
        order = list(calls.items())
        for _ in range(repeat):
            t0 = time.perf_counter()
            await select_one()
            page_base.append((time.perf_counter() - t0) * 1000)
            rng.shuffle(order)  # no figure always follows the same one
            for name, call in order:
                t0 = time.perf_counter()
                await call()
                samples[name].append((time.perf_counter() - t0) * 1000)
        snap = await cache._take()
        shown = [len(page.jobs) for page in (await jobs_page(), await failed_list())]  # type: ignore[attr-defined]
        results[size] = {
            "status p50": statistics.median(status),
            "status p99": p99(status),
            **{name: statistics.median(values) for name, values in samples.items()},
        }
        baselines[size] = {"p50": statistics.median(base), "p99": p99(base), "pages": statistics.median(page_base)}
        print(
            f"  {size:>9,} rows: filled in {fill_s:.1f} s, table with indexes and TOAST {table / 2**20:,.0f} MiB, "
            f"jobs by status {snap.jobs}, rows on the first pages {shown[0]} (jobs) and {shown[1]} (failed), "
            f"load {os.getloadavg()[0]:.2f}",
            flush=True,
        )

    first = sizes[0]
    print(f"\nmilliseconds (× SELECT 1 in the same loop); SELECT 1 p50/p99 over the {lookups} lookups' loop")
    head = f"{'rows':>10} {'SELECT 1 p50/p99':>17}" + "".join(f" {name:>16}" for name in figures)
    print(head)
    for size in sizes:
        b = baselines[size]
        line = f"{size:>10,} {b['p50']:>8.2f}/{b['p99']:<8.2f}"
        for name in figures:
            ref = b["p99"] if name == "status p99" else b["p50"] if name == "status p50" else b["pages"]
            line += f" {results[size][name]:>8.2f} ({results[size][name] / ref:>4.0f}×)"
        print(line)
    print(f"\nratio to the figure at {first:,} rows (flat ≈ 1×)")
    print(f"{'rows':>10} {'SELECT 1 p50':>17}" + "".join(f" {name:>16}" for name in figures))
    for size in sizes:
        line = f"{size:>10,} {baselines[size]['p50'] / baselines[first]['p50']:>16.2f}×"
        line += "".join(f" {results[size][name] / results[first][name]:>15.2f}×" for name in figures)
        print(line)
    for name, label in figures.items():
        print(f"  {name}: {label}")

    # The plans of whatever is not flat at the largest size (median more than twice the first's).
    not_flat = [name for name in calls if len(sizes) > 1 and results[sizes[-1]][name] / results[first][name] > 2.0]
    for name in not_flat:
        with captured(engine) as statements:
            await calls[name]()
        print(f"\nplans of '{figures[name]}' at {sizes[-1]:,} rows (EXPLAIN ANALYZE, BUFFERS):")
        async with filler.connect() as conn:
            for statement, parameters in statements:
                if not statement.lstrip().upper().startswith("SELECT") or "exam_processing_jobs" not in statement:
                    continue
                plan = await conn.exec_driver_sql("EXPLAIN (ANALYZE, BUFFERS) " + statement, parameters)
                print("  " + " ".join(statement.split())[:200])
                for line in plan.scalars():
                    print("    " + line)

    await cleanup(settings, database, filler, sizes[-1])
    await filler.dispose()
    await database.dispose()
    print(f"\nload average at the end {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


async def cleanup(settings: Settings, database: Database, filler: AsyncEngine, size: int) -> None:
    """The product's cleanup over the old rows, with the service probed from a second engine."""
    days = settings.job_retention_days
    due = await cleanup_finished(database, days, dry_run=True)
    print(f"\ncleanup at {size:,} rows: {due:,} finished jobs older than JOB_RETENTION_DAYS={days} (the dry run)")
    # One batch's plan, rolled back (what each of the batches runs).
    timed = TimedDatabase(database.engine)
    with captured(filler) as statements:
        async with AsyncSession(filler) as session:
            await JobService(session=session).delete_finished_batch(utcnow() - timedelta(days=days), CLEANUP_BATCH)
            await session.rollback()
    statement, parameters = statements[-1]
    async with filler.connect() as conn:
        plan = await conn.exec_driver_sql("EXPLAIN (ANALYZE, BUFFERS) " + statement, parameters)
        lines = list(plan.scalars())
        await conn.rollback()
    print("one batch's statement: " + " ".join(statement.split()))
    print("its plan (EXPLAIN ANALYZE, rolled back):")
    for line in lines:
        print("    " + line)

    activity = """
        SELECT (SELECT checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter),
               (SELECT autovacuum_count + autoanalyze_count FROM pg_stat_user_tables
                WHERE relname = 'exam_processing_jobs')
    """
    async with filler.connect() as conn:
        before = (await conn.execute(text(activity))).one()
    prober = Prober(settings, lambda rng: job_id(2 * rng.randint(1, size // 2)))  # even rows are kept
    prober.start()
    prober.phase = "before"
    await asyncio.sleep(8)
    prober.phase = "cleanup"
    started = time.perf_counter()
    deleted = await cleanup_finished(timed, days, dry_run=False)
    took = time.perf_counter() - started
    prober.phase = "after"
    await asyncio.sleep(0.5)
    prober.stop()

    await asyncio.sleep(1)  # autovacuum reports when it ends; it may still be running
    async with filler.connect() as conn:
        after = (await conn.execute(text(activity))).one()
        vacuuming = (
            await conn.execute(
                text("SELECT count(*) FROM pg_stat_progress_vacuum WHERE relid = 'exam_processing_jobs'::regclass")
            )
        ).scalar_one()
    spans = [s * 1000 for s in timed.spans]
    tenth = max(1, len(spans) // 10)
    print(f"\ncleanup (jobs.maintenance.cleanup_finished, batch {CLEANUP_BATCH}, 50 ms pause between batches):")
    print(f"  deleted {deleted:,} rows in {took:.1f} s: {deleted / took:,.0f} rows/s; {len(spans)} batches")
    print(f"  batch (= its transaction) p50 {statistics.median(spans):.1f} ms, p99 {p99(spans):.1f} ms, ", end="")
    print(f"longest {max(spans):.1f} ms (batch {spans.index(max(spans)) + 1})")
    longest = sorted(range(len(spans)), key=lambda i: -spans[i])[:5]
    print("  the 5 longest batches: " + ", ".join(f"#{i + 1} {spans[i]:.0f} ms" for i in longest))
    print(f"  first tenth of the batches median {statistics.median(spans[:tenth]):.1f} ms, ", end="")
    print(f"last tenth {statistics.median(spans[-tenth:]):.1f} ms")
    print(
        f"  meanwhile: {after[0] - before[0]} checkpoint(s), {after[1] - before[1]} autovacuum/autoanalyze run(s) "
        f"of the table finished, {vacuuming} still running"
    )
    print(
        "  Each batch is its own transaction (cleanup_finished: `async with database.transaction()` around one\n"
        "  DELETE … WHERE id IN (SELECT id … ORDER BY completed_at LIMIT 1000), committed on leaving the block),\n"
        "  and a DELETE's row locks are held until its COMMIT: the longest batch above, measured from the pool\n"
        "  checkout to the end of the COMMIT, is an upper bound on the longest time any row lock was held."
    )
    print("\nthe service meanwhile, from a second engine on its own thread (ms):")
    columns = ("lookups", "p50", "p99", "max", "submits", "p50", "p99", "max")
    print(f"  {'phase':<28}" + "".join(f" {c:>{8 if c[0] in 'ls' else 7}}" for c in columns))
    for phase, label in (("before", "8 s before the cleanup"), ("cleanup", "during the cleanup")):
        look, sub = prober.lookups.get(phase, []), prober.submits.get(phase, [])
        if not look or not sub:
            print(f"  {label:<28} (no samples)")
            continue
        print(
            f"  {label:<28} {len(look):>8} {statistics.median(look):>7.2f} {p99(look):>7.2f} {max(look):>7.2f}"
            f" {len(sub):>8} {statistics.median(sub):>7.2f} {p99(sub):>7.2f} {max(sub):>7.2f}"
        )
    print(f"  failed probes: {len(prober.failures)}" + (f" (first: {prober.failures[0]})" if prober.failures else ""))
    left = await cleanup_finished(database, days, dry_run=True)
    print(f"  finished jobs older than the cutoff left: {left}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes", default=",".join(str(s) for s in SIZES), help="ascending row counts, comma-separated"
    )
    parser.add_argument("--repeat", type=int, default=20, help="runs of each page and scrape per size")
    parser.add_argument("--lookups", type=int, default=2000, help="status lookups per size (p50, p99)")
    args = parser.parse_args()
    chosen = sorted({int(s.replace("_", "")) for s in args.sizes.split(",") if s.strip()})
    with postgres_database() as database_url:
        asyncio.run(main(chosen, args.repeat, args.lookups, database_url))
