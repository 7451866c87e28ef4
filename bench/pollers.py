"""How many clients polling every 2 s two web processes serve with p99 under 50 ms.

Starts ``exams serve --workers 2`` (PostgreSQL, Redis as the broker, no worker: only the web
path is measured) and submits one job. Then, for each number of pollers ``P``, keeps ``P``
keep-alive connections, each sending ``GET /api/exam-results/status/{id}`` once every 2 s at a
fixed schedule, the ``P`` schedules spread evenly over the 2 s (students do not poll in step).
This is an open loop: the offered load is ``P ÷ 2`` requests/s whatever the answers take, and a
latency is counted from when the request was *due*, so a server falling behind shows in the
figures rather than slowing the load down (no coordinated omission). The client is raw asyncio
sockets in ``--clients`` processes of this script, on the same two cores as the server and
PostgreSQL. Prints, per ``P``: requests/s offered and answered, p50/p99/max and errors, then the
largest ``P`` answered in full with p99 under 50 ms. ``GET /health`` at full speed (``wrk``,
closed loop) is measured on the same server first, for scale. Asserts nothing.

Every poller reads the same job: a status read costs the same for any job (one indexed row).

    .venv/bin/python bench/pollers.py [--pollers 1000 --pollers 2000 ...] [--seconds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from run import EXAMS, REPO, _wrk
from timing import p99

sys.path.insert(0, str(REPO / "tests"))
from support import MATH_ANSWERS, free_port, postgres_database, wait_http

P99_GOAL_MS = 50.0
POLL_SECONDS = 2.0
#: Seconds to open the connections and settle before the measured window.
RAMP_SECONDS = 3.0


async def _read_response(reader: asyncio.StreamReader) -> int:
    """Read one HTTP/1.1 response (``Content-Length`` body); its status code."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    await reader.readexactly(length)
    return status


async def _poll(
    port: int, path: str, pollers: int, first: int, step: int, start: float, seconds: float
) -> tuple[list[float], int]:
    """Pollers ``first, first + step, …`` of ``pollers``: latencies (s) of the requests due inside
    the window ``[start, start + seconds)`` (wall clock), and how many failed."""
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: application/json\r\n\r\n".encode()
    latencies: list[float] = []
    failed = 0
    offset = time.time() - time.monotonic()

    async def poller(index: int) -> None:
        nonlocal failed
        due = start - RAMP_SECONDS + POLL_SECONDS * index / pollers
        end = start + seconds
        connection: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        while due < end:
            await asyncio.sleep(max(0.0, due - offset - time.monotonic()))
            try:
                if connection is None:
                    connection = await asyncio.open_connection("127.0.0.1", port)
                reader, writer = connection
                writer.write(request)
                status = await _read_response(reader)
                if due >= start:
                    if status == 200:
                        latencies.append(time.monotonic() + offset - due)
                    else:
                        failed += 1
            except (OSError, asyncio.IncompleteReadError, ValueError):
                if due >= start:
                    failed += 1
                connection = None
            due += POLL_SECONDS
        if connection is not None:
            connection[1].close()

    await asyncio.gather(*(poller(i) for i in range(first, pollers, step)))
    return latencies, failed


def _client(args: tuple[int, str, int, int, int, float, float]) -> tuple[list[float], int]:
    return asyncio.run(_poll(*args))


def _pollers(port: int, path: str, pollers: int, seconds: float, clients: int) -> dict[str, float]:
    """One fixed-rate run: requests/s offered and answered, latency percentiles (ms), failures."""
    start = time.time() + RAMP_SECONDS + 1.0
    jobs = [(port, path, pollers, first, clients, start, seconds) for first in range(clients)]
    with multiprocessing.get_context("spawn").Pool(clients) as pool:
        parts = pool.map(_client, jobs)
    latencies = sorted(latency for part, _ in parts for latency in part)
    failed = sum(count for _, count in parts)
    row = {"pollers": float(pollers), "offered": pollers / POLL_SECONDS, "errors": float(failed)}
    row["rps"] = len(latencies) / seconds
    if latencies:
        row["p50"] = statistics.median(latencies) * 1000
        row["p99"] = p99(latencies) * 1000
        row["max"] = latencies[-1] * 1000
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pollers", type=int, action="append", help="repeatable; default 1,000 to 6,000")
    parser.add_argument("--seconds", type=int, default=20, help="per number of pollers")
    parser.add_argument("--workers", type=int, default=2, help="web processes")
    parser.add_argument("--clients", type=int, default=2, help="processes of the polling client")
    args = parser.parse_args()
    levels = args.pollers or [1000, 2000, 3000, 4000, 5000, 6000]
    if not shutil.which("wrk"):
        sys.exit("bench/pollers.py needs wrk (make system-deps)")
    tmp = Path(tempfile.mkdtemp(prefix="exams-pollers-"))
    (tmp / "metrics").mkdir()
    env = {**os.environ, "LOG_FORMAT": "json", "LOG_LEVEL": "warning", "AI_API_ENABLED": "false"}
    env |= {"SECRET_KEY": secrets.token_urlsafe(32), "ADMIN_PASSWORD": secrets.token_urlsafe(12)}
    env |= {"QUEUE_CONNECTION": "redis", "REDIS_URL": "redis://127.0.0.1:6379/12"}
    env["PROMETHEUS_MULTIPROC_DIR"] = str(tmp / "metrics")
    results: list[dict[str, float]] = []
    with postgres_database() as pg_url:
        env["DATABASE_URL"] = pg_url
        subprocess.run([EXAMS, "migrate"], env=env, check=True, capture_output=True)
        catalog = str(REPO / "src/exams/sample_catalog.json")
        subprocess.run([EXAMS, "catalog", "load", catalog], env=env, check=True, capture_output=True)
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        command = [EXAMS, "serve", "--port", str(port), "--workers", str(args.workers)]
        proc = subprocess.Popen(command, env=env, stdout=(tmp / "serve.log").open("wb"), stderr=subprocess.STDOUT)
        try:
            wait_http(f"{base}/health", proc=proc)
            body = {"exam_code": "MATH-101", "student_id": "poller", "answers": MATH_ANSWERS}
            job_id = httpx.post(f"{base}/api/exam-results/process", json=body).json()["job_id"]
            path = f"/api/exam-results/status/{job_id}"
            _wrk("warm-up", f"{base}/health", 2, 16)
            health = _wrk("GET /health", f"{base}/health", 6, 16)
            for pollers in levels:
                results.append(_pollers(port, path, pollers, args.seconds, args.clients))
                time.sleep(2)  # the previous run's connections closed
        finally:
            proc.terminate()
            proc.wait(30)
            subprocess.run(["redis-cli", "-n", "12", "FLUSHDB"], check=False, capture_output=True)
    print(f"\n{args.workers} web processes (PostgreSQL + Redis); each poller: one status read every 2 s, open loop")
    print(f"GET /health, closed loop (wrk -c16), for scale: {health['rps']:.0f} req/s")
    print(
        f"{'pollers':>8} {'offered/s':>10} {'answered/s':>11} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} {'errors':>7}"
    )
    best = 0
    for row in results:
        failed = row["errors"]
        print(
            f"{int(row['pollers']):>8} {row['offered']:>10.0f} {row.get('rps', 0):>11.0f} {row.get('p50', 0):>7.1f} "
            f"{row.get('p99', 0):>7.1f} {row.get('max', 0):>7.0f} {int(failed):>7}"
        )
        in_full = row.get("rps", 0) >= 0.97 * row["offered"] and failed == 0
        if in_full and row.get("p99", 1e9) < P99_GOAL_MS:
            best = max(best, int(row["pollers"]))
    print(f"\nlargest number of pollers answered in full with p99 < {P99_GOAL_MS:.0f} ms: {best:,}")


if __name__ == "__main__":
    main()
