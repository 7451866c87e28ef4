"""Benchmarks of the hot paths: submit (POST) and status (GET), against a baseline in the same run.

Starts a real ``exams serve`` (PostgreSQL + Redis, no worker, so only the web path is measured;
or embedded SQLite with ``--embedded``), drives it with a bounded closed-loop load (``wrk`` when
installed, ``apt-get install wrk``; else an asyncio client in this process, which costs CPU on
the same cores), and prints requests/s, p50 and p99 latency, and the ratio to ``GET /health``
measured on the same server in the same run (the framework's floor on this machine).

    .venv/bin/python bench/run.py [--seconds 8] [--requests 2000] [--concurrency 16] [--embedded]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
EXAMS = str(Path(sys.executable).with_name("exams"))
sys.path.insert(0, str(REPO / "tests"))
from support import MATH_ANSWERS, free_port, postgres_database, wait_http  # noqa: E402
from timing import p99  # noqa: E402


async def _drive(
    name: str, total: int, concurrency: int, call: Callable[[httpx.AsyncClient, int], Awaitable[httpx.Response]]
) -> dict[str, float]:
    latencies: list[float] = []
    errors = 0
    counter = iter(range(total))
    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=concurrency)) as client:

        async def worker() -> None:
            nonlocal errors
            for i in counter:
                started = time.perf_counter()
                response = await call(client, i)
                latencies.append(time.perf_counter() - started)
                if response.status_code >= 400:
                    errors += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "name": name,  # type: ignore[dict-item]
        "rps": total / elapsed,
        "p50": statistics.median(latencies) * 1000,
        "p99": p99(latencies) * 1000,
        "errors": errors,
    }


async def _bench(base: str, total: int, concurrency: int) -> list[dict[str, float]]:
    async with httpx.AsyncClient() as warm:
        for _ in range(50):
            await warm.get(f"{base}/health")
        first = await warm.post(
            f"{base}/api/exam-results/process",
            json={"exam_code": "MATH-101", "student_id": "bench", "answers": MATH_ANSWERS},
        )
        job_id = first.json()["job_id"]

    async def health(client: httpx.AsyncClient, _: int) -> httpx.Response:
        return await client.get(f"{base}/health")

    async def submit(client: httpx.AsyncClient, i: int) -> httpx.Response:
        body = {"exam_code": "MATH-101", "student_id": f"bench-{i}", "answers": MATH_ANSWERS}
        return await client.post(
            f"{base}/api/exam-results/process", json=body, headers={"Idempotency-Key": uuid.uuid4().hex}
        )

    async def status(client: httpx.AsyncClient, _: int) -> httpx.Response:
        return await client.get(f"{base}/api/exam-results/status/{job_id}")

    results = [await _drive("GET /health (baseline)", total, concurrency, health)]
    results.append(await _drive("POST /api/exam-results/process", total, concurrency, submit))
    results.append(await _drive("GET /api/exam-results/status/{id}", total, concurrency, status))
    return results


_WRK_POST = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
counter = 0
request = function()
  counter = counter + 1
  local body = string.format('{"exam_code":"MATH-101","student_id":"bench-%d","answers":%s}', counter, ANSWERS)
  return wrk.format(nil, nil, nil, body)
end
"""


def _wrk_ms(text: str) -> float:
    value, unit = float(text[:-2] if text.endswith(("ms", "us")) else text[:-1]), text[-2:]
    if unit == "us":
        return value / 1000
    if unit == "ms":
        return value
    return value * 1000  # seconds


def _wrk(name: str, url: str, seconds: int, concurrency: int, script: Path | None = None) -> dict[str, float]:
    args = ["wrk", "-t1", f"-c{concurrency}", f"-d{seconds}s", "--latency", url]
    if script is not None:
        args[1:1] = ["-s", str(script)]
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    stats: dict[str, float] = {"name": name, "errors": 0}  # type: ignore[dict-item]
    for line in out.splitlines():
        parts = line.split()
        if line.startswith("Requests/sec:"):
            stats["rps"] = float(parts[1])
        elif parts[:1] == ["50%"]:
            stats["p50"] = _wrk_ms(parts[1])
        elif parts[:1] == ["99%"]:
            stats["p99"] = _wrk_ms(parts[1])
        elif line.strip().startswith("Non-2xx"):
            stats["errors"] = float(parts[-1])
    return stats


def _bench_wrk(base: str, seconds: int, concurrency: int, tmp: Path) -> list[dict[str, float]]:
    import json

    first = httpx.post(
        f"{base}/api/exam-results/process",
        json={"exam_code": "MATH-101", "student_id": "bench", "answers": MATH_ANSWERS},
    )
    job_id = first.json()["job_id"]
    script = tmp / "post.lua"
    script.write_text(_WRK_POST.replace("ANSWERS", repr(json.dumps(MATH_ANSWERS))))
    _wrk("warm-up", f"{base}/health", 2, concurrency)
    return [
        _wrk("GET /health (baseline)", f"{base}/health", seconds, concurrency),
        _wrk("POST /api/exam-results/process", f"{base}/api/exam-results/process", seconds, concurrency, script),
        _wrk("GET /api/exam-results/status/{id}", f"{base}/api/exam-results/status/{job_id}", seconds, concurrency),
    ]


async def _database_floor(pg_url: str, seconds: float, concurrency: int) -> list[tuple[str, float]]:
    """What PostgreSQL alone does here: raw asyncpg reads and inserts on the same table."""
    import asyncpg

    dsn = pg_url.replace("postgresql+asyncpg://", "postgresql://")
    pool = await asyncpg.create_pool(dsn, min_size=concurrency, max_size=concurrency)
    insert = (
        "INSERT INTO exam_processing_jobs (job_id, exam_code, student_id, status, progress, current_step, "
        "answers, locale, attempts, version, enqueued_at, created_at, updated_at) "
        "VALUES ($1, 'MATH-101', 'floor', 'pending', 0, 'queued', '{}', 'en', 0, 1, now(), now(), now())"
    )
    job_id = uuid.uuid4()
    await pool.execute(insert, job_id)

    async def rate(call: Callable[[], Awaitable[object]]) -> float:
        done = 0
        stop = time.perf_counter() + seconds

        async def loop() -> None:
            nonlocal done
            while time.perf_counter() < stop:
                await call()
                done += 1

        await asyncio.gather(*(loop() for _ in range(concurrency)))
        return done / seconds

    try:
        select_rate = await rate(lambda: pool.fetchrow("SELECT * FROM exam_processing_jobs WHERE job_id = $1", job_id))
        insert_rate = await rate(lambda: pool.execute(insert, uuid.uuid4()))
    finally:
        await pool.execute("DELETE FROM exam_processing_jobs WHERE student_id = 'floor'")
        await pool.close()
    return [("raw asyncpg SELECT by job_id", select_rate), ("raw asyncpg INSERT (autocommit)", insert_rate)]


def _serve(env: dict[str, str], port: int, log: Path, workers: int) -> subprocess.Popen[bytes]:
    subprocess.run([EXAMS, "migrate"], env=env, check=True, capture_output=True)
    subprocess.run(
        [EXAMS, "catalog", "load", str(REPO / "src/exams/sample_catalog.json")],
        env=env,
        check=True,
        capture_output=True,
    )
    proc = subprocess.Popen(
        [EXAMS, "serve", "--port", str(port)], env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT
    )
    wait_http(f"http://127.0.0.1:{port}/health", proc=proc)
    return proc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000, help="per row, without wrk")
    parser.add_argument("--seconds", type=int, default=8, help="per row, with wrk")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--workers", type=int, default=1, help="web processes (not with --embedded)")
    parser.add_argument(
        "--embedded", action="store_true", help="SQLite + in-process worker instead of PostgreSQL + Redis"
    )
    args = parser.parse_args()
    port = free_port()
    tmp = Path(tempfile.mkdtemp(prefix="exams-bench-"))
    env = {**os.environ, "LOG_FORMAT": "json", "LOG_LEVEL": "warning", "AI_API_ENABLED": "false"}
    # What the production guard asks of `exams serve` on PostgreSQL and Redis.
    env |= {"SECRET_KEY": secrets.token_urlsafe(32), "ADMIN_PASSWORD": secrets.token_urlsafe(12)}
    with postgres_database() as pg_url:
        if args.embedded:
            env |= {"DATABASE_URL": f"sqlite+aiosqlite:///{tmp / 'bench.db'}", "QUEUE_CONNECTION": "embedded"}
        else:
            env |= {"DATABASE_URL": pg_url, "QUEUE_CONNECTION": "redis", "REDIS_URL": "redis://127.0.0.1:6379/11"}
            subprocess.run(["redis-cli", "-n", "11", "FLUSHDB"], check=False, capture_output=True)
        workers = 1 if args.embedded else args.workers
        proc = _serve(env, port, tmp / "server.log", workers)
        try:
            base = f"http://127.0.0.1:{port}"
            if shutil.which("wrk"):
                driver = f"wrk -t1, {args.seconds} s per row"
                results = _bench_wrk(base, args.seconds, args.concurrency, tmp)
            else:
                driver = f"in-process asyncio client, {args.requests} requests per row"
                results = asyncio.run(_bench(base, args.requests, args.concurrency))
            floor = [] if args.embedded else asyncio.run(_database_floor(pg_url, 4, args.concurrency))
        finally:
            proc.terminate()
            proc.wait(30)
            if not args.embedded:
                subprocess.run(["redis-cli", "-n", "11", "FLUSHDB"], check=False, capture_output=True)
    mode = "embedded SQLite" if args.embedded else "PostgreSQL + Redis"
    print(f"\n{mode}; {driver}; {args.concurrency} connections; {workers} web process(es)")
    print(f"{'endpoint':<36} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7} {'vs baseline':>12}")
    baseline = results[0]["rps"]
    for name, rps in floor:
        print(f"{name + ' (floor)':<36} {rps:>8.0f} {'':>8} {'':>8} {'':>7} {rps / baseline:>11.2f}x")
    for row in results:
        print(
            f"{row['name']:<36} {row['rps']:>8.0f} {row['p50']:>8.1f} {row['p99']:>8.1f} "
            f"{int(row['errors']):>7} {row['rps'] / baseline:>11.2f}x"
        )


if __name__ == "__main__":
    main()
