"""What open event streams cost: thousands of ``GET …/status/{job_id}/events`` on one web process.

Starts the production stack: PostgreSQL, a private Redis, one ``exams worker`` process, one web
process, and the fake AI answering after ``--ai-latency`` seconds. While a job waits for the AI,
its progress moves about once a second. The bench then runs two phases, each keeping ``--jobs``
jobs in flight (a finished job is replaced at once, so about that many are always in the AI step):

1. **baseline**: no stream open;
2. **streams**: ``--per-job`` event streams on every job, opened when it is submitted (raw
   asyncio sockets in this process) and read until the job's final event: about
   ``--jobs × --per-job`` streams open at any time.

After ``--warmup`` seconds, each phase is measured over ``--seconds``. PostgreSQL publishes a
busy backend's transaction counts up to a minute late, so windows shorter than a minute are
noisy. The bench prints database transactions a second (``pg_stat_database``: commits plus
rollbacks) and their ratio. It also prints the share of its job's changes each stream received:
a change is a notification on ``exam_jobs``, heard by a separate listener process, during the
stream's life in
the window. Then: events a second delivered and due; the delay from the database write (that
notification) to the event read off the socket (p50, p99, max); the web process's CPU; and its
memory per open stream. It asserts nothing.

    .venv/bin/python bench/streams.py [--jobs 20] [--per-job 112] [--seconds 60]

The delay is stamped in this process, whose event loop also reads every stream. On a busy machine
the figure therefore includes this process's own lag, and errs on the high side.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "tests" / "jobs"))
from production_support import Stack, db_rows, production_env  # noqa: E402

from support import MATH_ANSWERS  # noqa: E402

STATUS = "/api/exam-results/status"
FINAL = ("completed", "failed", "cancelled")


# --- The listener: when each change was written ---------------------------------------------------


def _listen(dsn: str, out: str, ready: Any) -> None:
    """In its own process: append ``job_id version wall-time`` for every notification on ``exam_jobs``."""
    import asyncpg

    async def run() -> None:
        connection = await asyncpg.connect(dsn)
        with open(out, "a", buffering=1) as sink:  # noqa: ASYNC230  (a line per notification, local file)

            def heard(_c: object, _pid: int, _channel: str, payload: str) -> None:
                sink.write(f"{payload} {time.time():.6f}\n")

            await connection.add_listener("exam_jobs", heard)
            ready.set()
            await asyncio.Event().wait()

    asyncio.run(run())


def _notifications(path: Path) -> dict[tuple[str, int], float]:
    """``(job_id, version) → when it was heard``."""
    heard: dict[tuple[str, int], float] = {}
    for line in path.read_text().splitlines():
        job_id, version, at = line.split()
        heard.setdefault((job_id, int(version)), float(at))
    return heard


# --- One event stream, read off a raw socket --------------------------------------------------------


@dataclass
class StreamClient:
    job_id: str
    #: ``(version, wall time read)`` of every ``progress`` event.
    events: list[tuple[int, float]] = field(default_factory=list)
    opened: float | None = None
    closed: float | None = None
    error: str | None = None


async def _read_stream(host: str, port: int, client: StreamClient) -> None:
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except OSError as exc:
        client.error = f"{type(exc).__name__}: {exc}"
        return
    try:
        request = f"GET {STATUS}/{client.job_id}/events HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\n\r\n"
        writer.write(request.encode())
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200"):
            client.error = head.split(b"\r\n", 1)[0].decode()
            return
        client.opened = time.time()
        buffer = b""
        while True:
            size_line = await reader.readline()
            if not size_line:
                return
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                return
            buffer += (await reader.readexactly(size + 2))[:-2]
            while b"\r\n\r\n" in buffer:
                frame, buffer = buffer.split(b"\r\n\r\n", 1)
                _frame(frame, client)
    except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
        client.error = f"{type(exc).__name__}: {exc}"
    finally:
        client.closed = time.time()
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


def _frame(frame: bytes, client: StreamClient) -> None:
    now = time.time()
    name = event_id = None
    for line in frame.split(b"\r\n"):
        if line.startswith(b"event: "):
            name = line[7:]
        elif line.startswith(b"id: "):
            event_id = line[4:]
    if name == b"progress" and event_id is not None:
        client.events.append((int(event_id), now))


# --- Keeping jobs in flight ---------------------------------------------------------------------------


def _xact(database_url: str) -> int:
    # Commits and rollbacks: a read that ends in a rollback is a transaction too.
    rows = db_rows(
        database_url,
        "SELECT xact_commit + xact_rollback AS xacts FROM pg_stat_database WHERE datname = current_database()",
    )
    return int(rows[0]["xacts"])


def _proc_stat(pid: int) -> tuple[float, int]:
    """CPU seconds used and resident bytes of a process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    rss = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
    return cpu, rss


@dataclass
class Phase:
    """One phase's measurements."""

    clients: list[StreamClient]
    window: tuple[float, float]
    xact_rate: float
    cpu: float
    client_cpu: float
    rss: int
    open_streams: float
    jobs_finished: int


async def _phase(
    base_url: str, database_url: str, *, jobs: int, per_job: int, warmup: float, seconds: float, pid: int
) -> Phase:
    """Keep ``jobs`` jobs in flight with ``per_job`` streams each, measure after ``warmup``."""
    import asyncpg

    host, port = base_url.removeprefix("http://").split(":")
    clients: list[StreamClient] = []
    tasks: set[asyncio.Task[None]] = set()
    finished: dict[str, asyncio.Event] = {}
    stop = asyncio.Event()
    done = [0]
    dsn = database_url.replace("postgresql+asyncpg://", "postgresql://", 1)
    monitor_db = await asyncpg.connect(dsn)

    async def monitor() -> None:
        # One query a second for every phase alike: which jobs in flight are finished.
        while not stop.is_set():
            await asyncio.sleep(1.0)
            ids = [UUID(job_id) for job_id, event in finished.items() if not event.is_set()]
            rows = await monitor_db.fetch(
                "SELECT job_id, status FROM exam_processing_jobs WHERE job_id = ANY($1::uuid[])", ids
            )
            for row in rows:
                if row["status"] in FINAL:
                    finished[str(row["job_id"])].set()

    async def slot(http: httpx.AsyncClient, index: int) -> None:
        serial = 0
        while not stop.is_set():
            serial += 1
            body = {"exam_code": "MATH-101", "student_id": f"bench-{index}-{serial}", "answers": MATH_ANSWERS}
            response = await http.post("/api/exam-results/process", json=body)
            job_id = str(response.json()["job_id"])
            finished[job_id] = asyncio.Event()
            for _ in range(per_job):
                client = StreamClient(job_id)
                clients.append(client)
                task = asyncio.create_task(_read_stream(host, int(port), client))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            stopped = asyncio.create_task(stop.wait())
            await asyncio.wait({stopped, asyncio.create_task(finished[job_id].wait())}, return_when="FIRST_COMPLETED")
            stopped.cancel()
            done[0] += 1

    async with httpx.AsyncClient(base_url=base_url, timeout=30) as http:
        watcher = asyncio.create_task(monitor())
        slots = [asyncio.create_task(slot(http, i)) for i in range(jobs)]
        await asyncio.sleep(warmup)

        cpu_before, _ = _proc_stat(pid)
        client_cpu = time.process_time()
        xact_before = await asyncio.to_thread(_xact, database_url)
        finished_before = done[0]
        window_start = time.time()
        samples = []
        rss = []
        while time.time() < window_start + seconds:
            await asyncio.sleep(1.0)
            samples.append(sum(1 for c in clients if c.opened is not None and c.closed is None))
            rss.append(_proc_stat(pid)[1])
        window_end = time.time()
        xact_after = await asyncio.to_thread(_xact, database_url)
        cpu_after, _ = _proc_stat(pid)
        client_cpu = time.process_time() - client_cpu
        jobs_finished = done[0] - finished_before

        stop.set()
        await asyncio.gather(*slots, watcher, return_exceptions=True)
        in_flight = [job_id for job_id, event in finished.items() if not event.is_set()]
        for job_id in in_flight:
            await http.post(f"{STATUS}/{job_id}/cancel")
    for task in list(tasks):
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await monitor_db.close()
    elapsed = window_end - window_start
    return Phase(
        clients=clients,
        window=(window_start, window_end),
        xact_rate=(xact_after - xact_before) / elapsed,
        cpu=(cpu_after - cpu_before) / elapsed,
        client_cpu=client_cpu / elapsed,
        rss=int(statistics.median(rss)),
        open_streams=statistics.mean(samples),
        jobs_finished=jobs_finished,
    )


#: A state replaced this soon by the job's next change is part of a burst (a job's first steps, its
#: last ones): a stream gets the burst's last state, as does every reader that reads after it.
BURST_SECONDS = 0.5


def _figures(phase: Phase, heard: dict[tuple[str, int], float]) -> dict[str, Any]:
    start, end = phase.window
    seconds = end - start
    versions: dict[str, dict[int, float]] = defaultdict(dict)
    for (job_id, version), at in heard.items():
        if start <= at < end:
            versions[job_id][version] = at
    spaced: dict[str, set[int]] = {}
    for job_id, changes in versions.items():
        ordered = sorted(changes.items(), key=lambda item: item[1])
        spaced[job_id] = {
            version
            for i, (version, at) in enumerate(ordered)
            if i == len(ordered) - 1 or ordered[i + 1][1] - at >= BURST_SECONDS
        }
    shares: list[float] = []
    shares_all: list[float] = []
    delays: list[float] = []
    delivered = due = 0
    for client in phase.clients:
        if client.opened is None or not client.events:
            continue
        # The job's changes while this stream was open (after its first event), inside the window.
        life_start = max(start, client.events[0][1])
        life_end = min(end, client.closed or end)
        every = {v for v, at in versions[client.job_id].items() if life_start < at <= life_end - 1.0}
        expected = every & spaced[client.job_id] if client.job_id in spaced else set()
        got = {version for version, _ in client.events}
        if expected:
            shares.append(len(expected & got) / len(expected))
            due += len(expected)
        if every:
            shares_all.append(len(every & got) / len(every))
        for version, at in client.events:
            written = versions[client.job_id].get(version)
            if written is not None:
                delivered += 1
                delays.append(at - written)
    delays.sort()
    return {
        "changes_per_s": sum(len(v) for v in versions.values()) / seconds,
        "share_min": min(shares) if shares else float("nan"),
        "share_median": statistics.median(shares) if shares else float("nan"),
        "streams_measured": len(shares),
        "streams_under_90": sum(1 for share in shares if share < 0.9),
        "share_all_median": statistics.median(shares_all) if shares_all else float("nan"),
        "delivered_per_s": delivered / seconds,
        "due_per_s": due / seconds,
        "delay_p50": delays[len(delays) // 2] if delays else float("nan"),
        "delay_p99": delays[int(len(delays) * 0.99) - 1] if delays else float("nan"),
        "delay_max": delays[-1] if delays else float("nan"),
        "errors": sorted({client.error for client in phase.clients if client.error})[:3],
    }


def _run(coroutine: Any) -> Any:
    """Run on uvloop when installed (it is, with uvicorn's extras): less client CPU per stream."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coroutine)
    return uvloop.run(coroutine)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=20, help="jobs kept in flight")
    parser.add_argument(
        "--per-job",
        type=int,
        default=112,
        help="event streams on each job (112 × 20 jobs: about 2,000 open at any time, as jobs turn over)",
    )
    parser.add_argument("--seconds", type=float, default=60.0, help="length of each measured window")
    parser.add_argument("--warmup", type=float, default=45.0, help="seconds before each window")
    parser.add_argument("--ai-latency", type=float, default=30.0, help="seconds the fake AI takes per job")
    args = parser.parse_args()

    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp, Stack(Path(tmp)) as stack:
        database = stack.postgres()
        redis = stack.redis()
        ai = stack.fake_ai(latency=args.ai_latency)
        env = production_env(
            database,
            ai.base_url,
            REDIS_URL=redis.url,
            AI_API_TIMEOUT=str(args.ai_latency + 10),
            JOB_STALE_AFTER="60",
        )
        stack.prepare(env)
        stack.worker(env, processes=1, threads=args.jobs + 4)
        server = stack.web(env)
        assert server.proc is not None
        pid = server.proc.pid

        heard_path = Path(tmp) / "heard.txt"
        heard_path.touch()
        ready = multiprocessing.Event()
        dsn = database.replace("postgresql+asyncpg://", "postgresql://", 1)
        listener = multiprocessing.Process(target=_listen, args=(dsn, str(heard_path), ready), daemon=True)
        listener.start()
        ready.wait(30)

        common = {"jobs": args.jobs, "warmup": args.warmup, "seconds": args.seconds, "pid": pid}
        print(f"baseline: {args.jobs} jobs in flight, no stream", flush=True)
        base = _run(_phase(server.base_url, database, per_job=0, **common))
        print(f"streams: {args.jobs} jobs in flight, {args.per_job} streams on each", flush=True)
        with_streams = _run(_phase(server.base_url, database, per_job=args.per_job, **common))
        listener.terminate()
        heard = _notifications(heard_path)
        base_changes = _figures(base, heard)["changes_per_s"]
        figures = _figures(with_streams, heard)

    streams = with_streams.open_streams
    print()
    print(f"machine: {os.cpu_count()} CPUs, load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after")
    print(
        f"windows: {args.seconds:g} s each; jobs finished in them: {base.jobs_finished} and "
        f"{with_streams.jobs_finished}; job changes/s: {base_changes:.1f} and {figures['changes_per_s']:.1f}"
    )
    print(f"streams open (mean over the window): {streams:.0f}; errors: {figures['errors'] or 'none'}")
    print(
        f"DB transactions/s: no stream {base.xact_rate:.1f}; with streams {with_streams.xact_rate:.1f} "
        f"(ratio {with_streams.xact_rate / base.xact_rate:.2f})"
    )
    print(
        f"changes received per stream ({figures['streams_measured']} streams): min {figures['share_min']:.1%}, "
        f"median {figures['share_median']:.1%}, under 90 %: {figures['streams_under_90']} "
        f"(bursts included: median {figures['share_all_median']:.1%})"
    )
    print(f"events/s delivered {figures['delivered_per_s']:.0f}, due (outside bursts) {figures['due_per_s']:.0f}")
    print(
        f"delay write -> socket: p50 {figures['delay_p50'] * 1000:.0f} ms, p99 {figures['delay_p99'] * 1000:.0f} ms, "
        f"max {figures['delay_max'] * 1000:.0f} ms"
    )
    print(
        f"web process CPU: {base.cpu:.0%} of a core without streams, {with_streams.cpu:.0%} with; "
        f"this client, reading every stream: {with_streams.client_cpu:.0%}"
    )
    per_stream = (with_streams.rss - base.rss) / max(streams, 1)
    print(
        f"web process RSS: {base.rss / 2**20:.0f} MiB without streams, {with_streams.rss / 2**20:.0f} MiB with; "
        f"{per_stream / 1024:.1f} KiB per open stream"
    )


if __name__ == "__main__":
    main()
