"""What the pipeline costs over Dramatiq itself: jobs/s with the AI disabled against a no-op actor.

Production mode on this machine: a fresh PostgreSQL database and a private Redis as the broker.

1. Baseline: ``--jobs`` messages for a no-op ``async`` actor on the same kind of broker (Redis,
   Dramatiq's ``AsyncIO`` middleware), drained by ``dramatiq --processes 1 --threads T``.
2. The product: ``--jobs`` submissions through ``exams serve`` with ``AI_API_ENABLED=false``
   (rule-based recommendations, no AI wait), drained by ``exams worker --processes 1 --threads T``.

Each is timed from the worker's start until its queue is empty (baseline) or every job is final
(product), and the ratio of the two rates is printed. Asserts nothing about time.

    .venv/bin/python bench/pipeline_overhead.py [--jobs 2000] [--threads 16]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "tests"), str(REPO / "tests" / "jobs")]
from production_support import RedisServer, Stack, db_rows, production_env, submit_many, wait_until  # noqa: E402

NOOP_MODULE = """
import os
import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import AsyncIO

broker = RedisBroker(url=os.environ["REDIS_URL"])
broker.add_middleware(AsyncIO())
dramatiq.set_broker(broker)


@dramatiq.actor(queue_name="noop", max_retries=0)
async def noop(job_id: str) -> None:
    return None
"""


def _baseline(tmp: Path, server: RedisServer, jobs: int, threads: int) -> float:
    (tmp / "noop_actor.py").write_text(NOOP_MODULE)
    env = {**os.environ, "REDIS_URL": server.url, "PYTHONPATH": str(tmp)}
    subprocess.run(
        [
            sys.executable,
            "-c",
            f"import noop_actor, uuid\nfor _ in range({jobs}): noop_actor.noop.send(str(uuid.uuid4()))",
        ],
        env=env,
        check=True,
    )
    redis = server.client()
    assert redis.llen("dramatiq:noop") == jobs
    started = time.monotonic()
    worker = subprocess.Popen(
        [sys.executable, "-m", "dramatiq", "noop_actor", "--processes", "1", "--threads", str(threads)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_until(
            lambda: redis.llen("dramatiq:noop") == 0 and redis.hlen("dramatiq:noop.msgs") == 0,
            600,
            "the no-op queue to drain",
            interval=0.05,
        )
        return jobs / (time.monotonic() - started)
    finally:
        os.killpg(worker.pid, 9)
        worker.wait(10)


def _product(stack: Stack, database_url: str, redis_url: str, jobs: int, threads: int) -> tuple[float, int]:
    env = production_env(
        database_url, "http://127.0.0.1:9/v1", REDIS_URL=redis_url, AI_API_ENABLED="false", LOG_LEVEL="warning"
    )
    stack.prepare(env)
    web = stack.web(env)
    submit_many(web, jobs, concurrency=16)
    started = time.monotonic()
    stack.worker(env, processes=1, threads=threads, wait=False)

    def finished() -> dict[str, int] | None:
        rows = db_rows(database_url, "SELECT status, count(*) AS n FROM exam_processing_jobs GROUP BY status")
        counts = {str(r["status"]): int(r["n"]) for r in rows}
        return counts if counts.get("completed", 0) + counts.get("failed", 0) >= jobs else None

    counts = wait_until(finished, 1200, "every job to finish", interval=0.2)
    return jobs / (time.monotonic() - started), counts.get("failed", 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=16)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as name, Stack(Path(name)) as stack:
        tmp = Path(name)
        database_url = stack.postgres()
        redis = stack.redis()
        baseline = _baseline(tmp, redis, args.jobs, args.threads)
        rate, failed = _product(stack, database_url, redis.url, args.jobs, args.threads)
    print(f"{args.jobs} messages or jobs, one worker process with {args.threads} threads, PostgreSQL + Redis")
    print("| run | per second | vs no-op actor |")
    print("|---|---|---|")
    print(f"| no-op Dramatiq actor (baseline) | {baseline:,.0f} | 1.00 |")
    print(f"| exam jobs, AI disabled ({failed} failed) | {rate:,.1f} | {rate / baseline:.3f} |")


if __name__ == "__main__":
    main()
