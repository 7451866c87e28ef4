"""How much a ``/metrics`` scrape costs the database with a million job rows.

Fills a fresh PostgreSQL database with ``--rows`` jobs (mostly completed, some failed, pending
and processing, as in a busy week), then times the scrape-time snapshot (job counts by status,
oldest pending, stalled, live workers) uncached, against ``SELECT 1`` measured in the same run.

    .venv/bin/python bench/metrics_scrape.py [--rows 1000000] [--repeat 10]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from core.db import Database  # noqa: E402
from core.settings import load_settings  # noqa: E402
from jobs.monitoring import MonitoringCache  # noqa: E402
from server.migrate import run_migrations  # noqa: E402
from server.wiring import Wiring  # noqa: E402
from support import postgres_database  # noqa: E402
from timing import time_ms  # noqa: E402

FILL = """
INSERT INTO exam_processing_jobs (job_id, exam_code, student_id, status, progress, current_step, answers,
    locale, attempts, version, created_at, updated_at, completed_at, heartbeat_at)
SELECT gen_random_uuid(), 'MATH-101', 's-' || g,
    CASE WHEN g % 100 = 0 THEN 'failed' WHEN g % 1000 = 1 THEN 'pending'
         WHEN g % 1000 = 2 THEN 'processing' ELSE 'completed' END,
    100, 'completed', '{}', 'en', 1, 1,
    now() - (g || ' seconds')::interval, now(), now() - (g || ' seconds')::interval, now()
FROM generate_series(1, :rows) AS g
"""


async def main(rows: int, repeat: int, url: str) -> None:
    from sqlalchemy import text

    settings = load_settings({"DATABASE_URL": url, "QUEUE_CONNECTION": "embedded"})
    await asyncio.to_thread(run_migrations, settings)
    database = Database.from_settings(settings)
    engine = database.engine
    started = time.perf_counter()
    async with engine.begin() as conn:
        await conn.execute(text(FILL), {"rows": rows})
        await conn.execute(text("ANALYZE exam_processing_jobs"))
    fill_seconds = time.perf_counter() - started
    cache = MonitoringCache(database, Wiring(settings).broker(worker=False)[0], settings)

    async def select_one() -> None:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    baseline = await time_ms(select_one, repeat)
    first = await time_ms(cache._take, 1)  # counts every status, the completed ones included
    snapshot_ms = await time_ms(cache._take, repeat)  # then completed comes from its slower cache
    snap = await cache._take()
    await database.dispose()
    print(f"\n{rows:,} job rows (filled in {fill_seconds:.1f} s); {repeat} uncached snapshots")
    print(f"jobs by status: {snap.jobs}")
    print(f"{'query':<40} {'median ms':>10} {'max ms':>8} {'vs SELECT 1':>12}")
    base = statistics.median(baseline)
    rows_out = (
        ("SELECT 1 (baseline)", baseline),
        ("snapshot, completed counted too", first),
        ("snapshot, completed from cache", snapshot_ms),
    )
    for name, samples in rows_out:
        median = statistics.median(samples)
        print(f"{name:<40} {median:>10.2f} {max(samples):>8.2f} {median / base:>11.1f}x")
    print("A scrape reuses a snapshot up to 5 s old; completed jobs are recounted at most once a minute.")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args()
    with postgres_database() as database_url:
        asyncio.run(main(args.rows, args.repeat, database_url))
