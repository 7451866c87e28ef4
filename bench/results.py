"""Benchmark of the results queries at 1,000,000 results, against a ``SELECT 1`` baseline.

Creates a fresh PostgreSQL database, migrates it, inserts N results (default 1,000,000, spread
over 20 exams, 50,000 students and a year) with ``generate_series`` (and four topic rows each),
runs ``ANALYZE``, then times, through the product's own query functions:

- the first page (50, no filter), a deep page (after 900,000 rows: the keyset cursor, not OFFSET),
- a filtered page (one student, one exam, passed, a time window),
- the per-exam summary (count, mean, pass rate, per-topic means), and, for comparison, the per-topic
  means computed from the result JSON (``jsonb_array_elements``), which the child table replaces,
- a CSV export of 100,000 rows (streamed in keyset batches; peak memory reported),

each as the median of a few runs, next to ``SELECT 1`` on the same connection. It asserts nothing
about time: the figures go in ``docs`` and reviews.

    .venv/bin/python bench/results.py [--results 1000000] [--runs 5]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from core.db import Database  # noqa: E402
from core.settings import Settings, load_settings  # noqa: E402
from jobs.results import ResultFilters, csv_lines, exam_summary, list_results  # noqa: E402
from server.migrate import run_migrations  # noqa: E402
from support import NO_ENV_FILE, postgres_database  # noqa: E402

START = datetime(2025, 1, 1, tzinfo=UTC)

FILL_RESULTS = """
INSERT INTO exam_results (job_id, exam_code, student_id, score, max_score, percentage, passed, graded_at, result)
SELECT md5(i::text)::uuid,
       'EXAM-' || (i % 20),
       's-' || (i % 50000),
       (i % 101) / 10.0, 10, (i % 101)::float, (i % 101) >= 60,
       TIMESTAMPTZ '2025-01-01' + (i * interval '31 seconds'),
       jsonb_build_object(
         'score', (i % 101) / 10.0, 'max_score', 10, 'percentage', (i % 101)::float, 'passed', (i % 101) >= 60,
         'topics', jsonb_build_array(
            jsonb_build_object('topic', 'algebra', 'percentage', ((i * 7) % 101)::float),
            jsonb_build_object('topic', 'geometry', 'percentage', ((i * 11) % 101)::float),
            jsonb_build_object('topic', 'biology', 'percentage', ((i * 13) % 101)::float),
            jsonb_build_object('topic', 'physics', 'percentage', ((i * 17) % 101)::float)),
         'questions', '[]'::jsonb, 'recommendations', '[]'::jsonb, 'recommendations_source', 'rule_based',
         'processed_at', '2025-01-01T00:00:00Z')
FROM generate_series(1, :n) AS i
"""
FILL_TOPICS = """
INSERT INTO exam_result_topics (result_id, exam_code, topic, percentage)
SELECT r.id, r.exam_code, t.value->>'topic', (t.value->>'percentage')::float
FROM exam_results r CROSS JOIN LATERAL jsonb_array_elements(r.result->'topics') AS t(value)
"""
TOPICS_FROM_JSON = """
SELECT t.value->>'topic', avg((t.value->>'percentage')::float)
FROM exam_results r CROSS JOIN LATERAL jsonb_array_elements(r.result->'topics') AS t(value)
WHERE r.exam_code = 'EXAM-7' GROUP BY 1
"""


async def _median(runs: int, work: Callable[[], Awaitable[Any]]) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        await work()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main(results: int, runs: int) -> None:
    with postgres_database() as url:
        settings = load_settings({"DATABASE_URL": url}, env_file=NO_ENV_FILE)
        run_migrations(settings)
        asyncio.run(measure(settings, results, runs))


async def measure(settings: Settings, results: int, runs: int) -> None:
    """Fill the database of ``settings`` and print the figures."""
    db = Database.from_settings(settings)
    # The product's engine gives every statement 30 s (asyncpg's command_timeout): filling and
    # vacuuming a million rows take longer, so they run on an engine of their own without it.
    filler = create_async_engine(settings.database_url, connect_args={"command_timeout": None})
    try:
        started = time.perf_counter()
        async with filler.begin() as conn:
            await conn.execute(text(FILL_RESULTS), {"n": results})
            await conn.execute(text(FILL_TOPICS))
        async with filler.execution_options(isolation_level="AUTOCOMMIT").connect() as conn:
            await conn.execute(text("VACUUM ANALYZE exam_results"))
            await conn.execute(text("VACUUM ANALYZE exam_result_topics"))
        await filler.dispose()
        took = time.perf_counter() - started
        print(f"inserted {results:,} results (+ {4 * results:,} topic rows) in {took:.1f} s")

        async with db.reader.connect() as conn:
            deep_cursor = None
            page_size = 500
            # Walk to a deep position once (not timed), keeping its cursor.
            target = min(900_000, results - 100)
            walked = 0
            while walked < target:
                size = min(page_size, target - walked)
                page = await list_results(conn, ResultFilters(), limit=size, cursor=deep_cursor)
                deep_cursor = page.next_cursor
                walked += size
            filtered = ResultFilters(
                student_id="s-4242",
                exam_code="EXAM-2",
                passed=True,
                graded_after=START,
                graded_before=datetime(2026, 1, 1, tzinfo=UTC),
            )
            figures = {
                "SELECT 1 (baseline)": await _median(runs, lambda: conn.execute(text("SELECT 1"))),
                "first page (50)": await _median(runs, lambda: list_results(conn, ResultFilters(), limit=50)),
                f"deep page (50 after {walked:,})": await _median(
                    runs, lambda: list_results(conn, ResultFilters(), limit=50, cursor=deep_cursor)
                ),
                "filtered page (student+exam+passed+time)": await _median(
                    runs, lambda: list_results(conn, filtered, limit=50)
                ),
                "exam page (EXAM-7, 50)": await _median(
                    runs, lambda: list_results(conn, ResultFilters(exam_code="EXAM-7"), limit=50)
                ),
                f"summary (EXAM-7, {results // 20:,} results)": await _median(
                    runs, lambda: exam_summary(conn, "EXAM-7")
                ),
                "per-topic means from the JSON instead (comparison)": await _median(
                    runs, lambda: conn.execute(text(TOPICS_FROM_JSON))
                ),
            }

        # Results are 31 s apart: the last 100,000 span about 36 days (the window holds more when
        # fewer results are inserted, and the export stops at 100,000 rows).
        window = ResultFilters(graded_after=START + (max(results - 100_000, 0) - 1) * timedelta(seconds=31))

        async def export(limit: int = 100_000) -> int:
            rows = -1  # the header line
            async for chunk in csv_lines(db.reader, window):
                rows += chunk.count(b"\n")
                if rows >= limit:
                    break
            exported.append(rows)
            return rows

        exported: list[int] = []
        figures["CSV export (100,000 rows)"] = await _median(max(1, runs // 2), export)
        # Memory apart from the timing (tracemalloc slows every allocation several times over):
        # constant memory means the same peak for 10,000 rows as for 100,000.
        peaks = {}
        for rows in (10_000, 100_000):
            tracemalloc.start()
            await export(rows)
            peaks[rows] = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
    finally:
        await filler.dispose()
        await db.dispose()

    baseline = figures["SELECT 1 (baseline)"]
    print(f"\n{'query':<52} {'median ms':>10} {'× SELECT 1':>11}")
    for name, seconds in figures.items():
        print(f"{name:<52} {seconds * 1000:>10.2f} {seconds / baseline:>11.1f}")
    print(f"\nCSV export: {exported[0]:,} rows per run; peak Python memory ", end="")
    print(", ".join(f"{peak / 1024 / 1024:.1f} MiB for {rows:,} rows" for rows, peak in peaks.items()))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    main(args.results, args.runs)
