"""Jobs in flight in one worker process: throughput against the ideal, failures, memory, connections.

Production mode on this machine: a fresh PostgreSQL database, a private Redis as the broker, the
fake AI (``exams fake-ai``) answering after ``--latency`` seconds, ``exams serve`` to take the
submissions. ``--jobs`` submissions are queued first (through the API); then one
``exams worker --processes 1 --threads T`` starts, and the bench waits until every job is final.

Prints completed jobs/s against the ideal ``T / latency`` (the AI wait is the only thing a job
waits for), failed jobs and their errors, the worker's peak memory (RSS) and peak database
connections, and database transactions and row updates per job. Asserts nothing about time.

    .venv/bin/python bench/inflight.py [--threads 500] [--jobs 2500] [--latency 10]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "tests"), str(REPO / "tests" / "jobs")]
from production_support import Stack, db_rows, production_env, submit_many  # noqa: E402


def _rss_mib(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


def _cpu_seconds(pids: list[int]) -> float:
    ticks = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def _stats(database_url: str) -> dict[str, int]:
    name = database_url.rsplit("/", 1)[1]
    row = db_rows(
        database_url,
        "SELECT d.xact_commit AS commits, COALESCE(t.n_tup_upd, 0) AS updates "
        "FROM pg_stat_database d LEFT JOIN pg_stat_user_tables t ON t.relname = 'exam_processing_jobs' "
        "WHERE d.datname = $1",
        name,
    )[0]
    return {"commits": int(row["commits"]), "updates": int(row["updates"])}


def run(threads: int, jobs: int, latency: float, logs: str | None = None) -> dict[str, object]:
    context = contextlib.nullcontext(tempfile.mkdtemp(dir=logs)) if logs else tempfile.TemporaryDirectory()
    with context as tmp, Stack(Path(tmp)) as stack:
        database_url = stack.postgres()
        redis = stack.redis()
        ai = stack.fake_ai(latency=latency)
        env = production_env(
            database_url,
            ai.base_url,
            REDIS_URL=redis.url,
            AI_API_TIMEOUT=str(latency * 6),
            AI_MAX_CONCURRENCY=str(threads * 2),
            JOB_STALE_AFTER="300",
            LOG_LEVEL=os.environ.get("BENCH_LOG_LEVEL", "warning"),
        )
        stack.prepare(env)
        web = stack.web(env)
        submitted = time.monotonic()
        ids = submit_many(web, jobs, concurrency=16)
        print(f"  {jobs} submissions queued in {time.monotonic() - submitted:.1f} s", flush=True)
        before = _stats(database_url)
        peak = {"rss": 0.0, "connections": 0, "cpu": 0.0}
        in_flight: list[int] = []
        done = threading.Event()
        worker = stack.worker(env, processes=1, threads=threads, wait=False)
        started = time.monotonic()

        def sample() -> None:
            while not done.wait(1.0):
                peak["rss"] = max(peak["rss"], _rss_mib(worker.worker_pids()))
                peak["cpu"] = max(peak["cpu"], _cpu_seconds(worker.worker_pids()))
                count = db_rows(
                    database_url,
                    "SELECT count(*) AS n FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
                    database_url.rsplit("/", 1)[1],
                )[0]["n"]
                peak["connections"] = max(peak["connections"], int(count))
                in_flight.append(
                    int(
                        db_rows(
                            database_url,
                            "SELECT count(*) AS n FROM exam_processing_jobs WHERE status = 'processing'",
                        )[0]["n"]
                    )
                )

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        deadline = started + max(120.0, 4 * jobs / threads * latency)
        finished: dict[str, int] = {}
        while time.monotonic() < deadline:
            rows = db_rows(database_url, "SELECT status, count(*) AS n FROM exam_processing_jobs GROUP BY status")
            finished = {str(r["status"]): int(r["n"]) for r in rows}
            if finished.get("completed", 0) + finished.get("failed", 0) >= len(ids):
                break
            time.sleep(0.5)
        elapsed = time.monotonic() - started
        done.set()
        sampler.join(5)
        after = _stats(database_url)
        errors = Counter(
            str(r["error_code"])
            for r in db_rows(database_url, "SELECT error_code FROM exam_processing_jobs WHERE status = 'failed'")
        )
        completed = finished.get("completed", 0)
        # Steady state: completions between the 10th and the 90th percentile of completion times
        # (leaves out the first wave's start and the last wave's tail).
        times = sorted(
            r["t"]
            for r in db_rows(
                database_url,
                "SELECT extract(epoch FROM completed_at) AS t FROM exam_processing_jobs WHERE status = 'completed'",
            )
        )
        low, high = times[len(times) // 10], times[len(times) * 9 // 10]
        job_seconds = db_rows(
            database_url,
            "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM completed_at - started_at)) AS p50,"
            " percentile_cont(0.9) WITHIN GROUP (ORDER BY extract(epoch FROM completed_at - started_at)) AS p90"
            " FROM exam_processing_jobs WHERE status = 'completed'",
        )[0]
        print(f"  seconds from claim to completion: p50 {job_seconds['p50']:.2f}, p90 {job_seconds['p90']:.2f}")
        steady = (len(times) * 8 // 10) / max(float(high - low), 0.001)
        return {
            "threads": threads,
            "jobs": jobs,
            "completed": completed,
            "failed": finished.get("failed", 0),
            "unfinished": jobs - completed - finished.get("failed", 0),
            "errors": dict(errors),
            "seconds": elapsed,
            "rate": completed / elapsed,
            "steady": steady,
            "ideal": threads / latency,
            "rss_mib": peak["rss"],
            "cpu_ms_per_job": peak["cpu"] * 1000 / max(completed, 1),
            "in_flight": statistics.median(in_flight) if in_flight else 0,
            "connections": peak["connections"],
            "commits_per_job": (after["commits"] - before["commits"]) / max(completed, 1),
            "updates_per_job": (after["updates"] - before["updates"]) / max(completed, 1),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, action="append", help="worker threads (repeatable; default 500)")
    parser.add_argument("--jobs-per-thread", type=int, default=5)
    parser.add_argument("--latency", type=float, default=10.0)
    parser.add_argument("--logs", help="keep the processes' logs in a new directory under this one")
    args = parser.parse_args()
    print(
        "| threads | jobs | completed/s | ideal | ratio | steady completed/s | steady ratio | failed | seconds "
        "| median in flight "
        "| worker RSS MiB | worker CPU ms/job | DB connections | commits/job | row updates/job |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for threads in args.threads or [500]:
        r = run(threads, threads * args.jobs_per_thread, args.latency, args.logs)
        print(
            f"| {r['threads']} | {r['jobs']:,} | {r['rate']:.2f} | {r['ideal']:.1f} | "
            f"{float(r['rate']) / float(r['ideal']):.2f} | {r['steady']:.2f} | "
            f"{float(r['steady']) / float(r['ideal']):.2f} | {r['failed']} {r['errors'] or ''} | {r['seconds']:.0f} "
            f"| {r['in_flight']:.0f} | {r['rss_mib']:.0f} | {r['cpu_ms_per_job']:.1f} | {r['connections']} "
            f"| {r['commits_per_job']:.1f} | {r['updates_per_job']:.1f} |",
            flush=True,
        )
        if r["unfinished"]:
            print(f"  {r['unfinished']} jobs unfinished at the deadline")


if __name__ == "__main__":
    main()
