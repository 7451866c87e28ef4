"""How much the dashboard's jobs list costs the database with a million job rows.

Fills a fresh PostgreSQL database with ``--rows`` jobs (generate_series), then times, against
``SELECT 1`` measured in the same run: the first page of the list (newest 50), a deep keyset page
(50 rows after a cursor half-way down the table), the first page filtered by status ``failed``,
and the failure groups. Prints the numbers and the plan of the deep page; asserts nothing.

    .venv/bin/python bench/admin_jobs_page.py [--rows 1000000] [--repeat 10]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from core.db import Database  # noqa: E402
from core.settings import load_settings  # noqa: E402
from jobs.admin_queries import Cursor, JobFilter, failure_groups, list_jobs  # noqa: E402
from server.migrate import run_migrations  # noqa: E402
from support import postgres_database  # noqa: E402
from timing import time_ms  # noqa: E402

FILL = """
INSERT INTO exam_processing_jobs (job_id, exam_code, student_id, status, progress, current_step, failed_step,
    answers, locale, attempts, version, created_at, updated_at, completed_at, failed_at, error_message)
SELECT gen_random_uuid(), 'MATH-101', 's-' || g,
    CASE WHEN g % 100 = 0 THEN 'failed' WHEN g % 1000 = 1 THEN 'pending'
         WHEN g % 1000 = 2 THEN 'processing' ELSE 'completed' END,
    100, 'completed', CASE WHEN g % 100 = 0 THEN 'getting_ai_recommendations' END,
    '{}', 'en', 1, 1,
    now() - (g || ' seconds')::interval, now(), now() - (g || ' seconds')::interval,
    CASE WHEN g % 100 = 0 THEN now() - (g || ' seconds')::interval END,
    CASE WHEN g % 100 = 0 THEN 'gave up after ' || (g % 4 + 1) || ' attempts: AI request failed: HTTP 500' END
FROM generate_series(CAST(:first AS integer), CAST(:last AS integer)) AS g
"""
STALE_AFTER = 60.0


async def main(rows: int, repeat: int, url: str) -> None:
    from sqlalchemy import text

    settings = load_settings({"DATABASE_URL": url, "QUEUE_CONNECTION": "embedded"})
    await asyncio.to_thread(run_migrations, settings)
    database = Database.from_settings(settings)
    engine = database.engine
    started = time.perf_counter()
    batch = 100_000  # each INSERT stays well under the engine's 30 s statement timeout
    for first in range(1, rows + 1, batch):
        async with engine.begin() as conn:
            await conn.execute(text(FILL), {"first": first, "last": min(first + batch - 1, rows)})
    async with engine.begin() as conn:
        await conn.execute(text("ANALYZE exam_processing_jobs"))
    fill_seconds = time.perf_counter() - started

    middle_sql = "SELECT created_at, id FROM exam_processing_jobs ORDER BY created_at DESC, id DESC OFFSET :n LIMIT 1"
    async with engine.connect() as conn:
        middle = (await conn.execute(text(middle_sql), {"n": rows // 2})).one()
    deep = Cursor(middle.created_at, middle.id)

    async def select_one() -> None:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    def page(flt: JobFilter, after: Cursor | None = None) -> Callable[[], Awaitable[object]]:
        async def run() -> object:
            async with database.sessions() as session:
                return await list_jobs(session, flt, stale_after=STALE_AFTER, after=after, limit=50)

        return run

    async def groups() -> object:
        async with database.sessions() as session:
            return await failure_groups(session)

    await page(JobFilter())()  # warm the connection pool and the caches
    measured = (
        ("SELECT 1 (baseline)", await time_ms(select_one, repeat)),
        ("first page (newest 50)", await time_ms(page(JobFilter()), repeat)),
        (f"keyset page after row {rows // 2:,}", await time_ms(page(JobFilter(), deep), repeat)),
        ("first page, status=failed", await time_ms(page(JobFilter(status="failed")), repeat)),
        ("first page, error contains '500'", await time_ms(page(JobFilter(error="500")), repeat)),
        (f"failure groups ({rows // 100:,} failed rows)", await time_ms(groups, max(1, repeat // 2))),
    )
    async with engine.connect() as conn:
        plan = (
            (
                await conn.execute(
                    text(
                        "EXPLAIN (ANALYZE, BUFFERS) SELECT * FROM exam_processing_jobs "
                        "WHERE (created_at, id) < (:c, :i) ORDER BY created_at DESC, id DESC LIMIT 51"
                    ),
                    {"c": deep.created_at, "i": deep.id},
                )
            )
            .scalars()
            .all()
        )
    await database.dispose()
    print(f"\n{rows:,} job rows (filled in {fill_seconds:.1f} s); {repeat} runs each, times in ms")
    print(f"{'query':<44} {'median':>8} {'max':>8} {'vs SELECT 1':>12}")
    base = statistics.median(measured[0][1])
    for name, samples in measured:
        median = statistics.median(samples)
        print(f"{name:<44} {median:>8.2f} {max(samples):>8.2f} {median / base:>11.1f}x")
    print("\nplan of the deep keyset page:")
    for line in plan:
        print("  " + line)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args()
    with postgres_database() as database_url:
        asyncio.run(main(args.rows, args.repeat, database_url))
