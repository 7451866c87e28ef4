"""uvicorn (what ``exams serve`` runs) against granian, on the same app, routes and database.

Starts each server in turn, twice (uvicorn, granian, uvicorn, granian: the machine's drift
shows), on one fresh PostgreSQL database with Redis as the broker and no worker, with
``--workers`` processes each, and drives ``GET /health``, ``POST /api/exam-results/process`` and
``GET /api/exam-results/status/{id}`` with ``wrk`` (as ``bench/run.py`` does). Prints requests/s,
p50/p99 and errors per route, and each route's requests/s under granian over uvicorn's in the
same round. Asserts nothing. granian is a dev dependency (requirements.lock) for this comparison
only; it is not what ``exams serve`` runs.

    .venv/bin/python bench/servers.py [--workers 1] [--concurrency 16] [--seconds 6] [--rounds 2]
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from run import EXAMS, REPO, _bench_wrk

sys.path.insert(0, str(REPO / "tests"))
from support import free_port, postgres_database, wait_http

GRANIAN = str(Path(EXAMS).with_name("granian"))


def _start(server: str, env: dict[str, str], port: int, workers: int, log: Path) -> subprocess.Popen[bytes]:
    if server == "uvicorn":
        args = [EXAMS, "serve", "--port", str(port), "--workers", str(workers)]
    else:
        # The app factory reads the same environment as `exams serve` (create_app() without settings).
        args = [
            GRANIAN,
            "--interface",
            "asgi",
            "--factory",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            str(workers),
            "--no-ws",
            "--log-level",
            "warning",
            "server.app:create_app",
        ]
    proc = subprocess.Popen(args, env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT)
    wait_http(f"http://127.0.0.1:{port}/health", proc=proc)
    return proc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=1, help="web processes of each server")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seconds", type=int, default=6, help="per route")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    if not shutil.which("wrk"):
        sys.exit("bench/servers.py needs wrk (apt-get install wrk)")
    if not Path(GRANIAN).exists():
        sys.exit("bench/servers.py needs granian (make install: it is in the dev dependencies)")
    tmp = Path(tempfile.mkdtemp(prefix="exams-servers-"))
    env = {**os.environ, "LOG_FORMAT": "json", "LOG_LEVEL": "warning", "AI_API_ENABLED": "false"}
    env |= {"SECRET_KEY": secrets.token_urlsafe(32), "ADMIN_PASSWORD": secrets.token_urlsafe(12)}
    env |= {"QUEUE_CONNECTION": "redis", "REDIS_URL": "redis://127.0.0.1:6379/11"}
    if args.workers > 1:
        (tmp / "metrics").mkdir()
        env["PROMETHEUS_MULTIPROC_DIR"] = str(tmp / "metrics")
    rows: list[tuple[int, str, list[dict[str, float]]]] = []
    with postgres_database() as pg_url:
        env["DATABASE_URL"] = pg_url
        subprocess.run([EXAMS, "migrate"], env=env, check=True, capture_output=True)
        catalog = str(REPO / "src/exams/sample_catalog.json")
        subprocess.run([EXAMS, "catalog", "load", catalog], env=env, check=True, capture_output=True)
        try:
            for round_ in range(1, args.rounds + 1):
                for server in ("uvicorn", "granian"):
                    port = free_port()
                    proc = _start(server, env, port, args.workers, tmp / f"{server}.log")
                    try:
                        results = _bench_wrk(f"http://127.0.0.1:{port}", args.seconds, args.concurrency, tmp)
                        rows.append((round_, server, results))
                    finally:
                        proc.terminate()
                        proc.wait(30)
        finally:
            subprocess.run(["redis-cli", "-n", "11", "FLUSHDB"], check=False, capture_output=True)
    print(f"\n{args.workers} web process(es) per server; wrk -t1 -c{args.concurrency}, {args.seconds} s per route")
    print(f"{'round':<6} {'server':<8} {'route':<36} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'errors':>6}")
    for round_, server, results in rows:
        for row in results:
            print(
                f"{round_:<6} {server:<8} {row['name']:<36} {row['rps']:>8.0f} {row['p50']:>7.1f} "
                f"{row['p99']:>7.1f} {int(row['errors']):>6}"
            )
    print("\ngranian ÷ uvicorn, requests/s, per round:")
    for round_ in range(1, args.rounds + 1):
        uvicorn, granian = (next(r for n, s, r in rows if n == round_ and s == name) for name in ("uvicorn", "granian"))
        pairs = zip(uvicorn, granian, strict=True)
        ratios = ", ".join(f"{u['name'].split(' (')[0]} {g['rps'] / u['rps']:.2f}×" for u, g in pairs)
        print(f"  round {round_}: {ratios}")


if __name__ == "__main__":
    main()
