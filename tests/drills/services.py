"""Private service instances a drill may stop, kill and start, and the drills' traffic and checks.

The machine's PostgreSQL, Redis and RabbitMQ are shared with other tests (and other people), so
a drill never restarts them: it starts its own on free ports in temporary directories. A missing
binary makes these helpers raise: the drills fail, never skip.

- :class:`PrivatePostgres`: ``initdb`` + ``pg_ctl`` as the ``postgres`` user (PostgreSQL refuses
  to run as root), stopped with ``-m fast`` or ``-m immediate``.
- :class:`PrivateRedis`: ``redis-server`` without persistence; a restart is a kill, a wait and a
  start on the same port, so the broker comes back empty, as a real one without AOF does.
- :class:`PrivateRabbitMQ`: a RabbitMQ node of its own (name, ports, data directory),
  stopped with ``rabbitmqctl stop`` and started again on the same data (durable queues kept).
- :class:`Traffic`: submissions at a steady pace from a background thread (or a burst at once),
  every answer kept; :func:`check_outcome` asserts what every drill must end with.
- :func:`wait_for_every_step`: right before a fault, until the drill's unfinished jobs occupy every
  step (queued, then each step a worker runs). The database steps last milliseconds, so the
  PostgreSQL-backed drills put a :class:`~production_support.TcpProxy` with a little latency
  between the worker and PostgreSQL (``worker_db_latency``): each step then lasts long enough
  to be caught.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import itertools
import os
import random
import shutil
import signal
import socket
import sqlite3
import subprocess
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from production_support import (
    FakeAI,
    RedisServer,
    Scheduler,
    Stack,
    TcpProxy,
    Worker,
    db_rows,
    pg_address,
    production_env,
    via_proxy,
    wait_until,
)

from support import MATH_ANSWERS, ExamsServer, json_lines

__all__ = (
    "IN_FLIGHT_STEPS",
    "WORKER_DB_LATENCY",
    "DrillOutcome",
    "PrivatePostgres",
    "PrivateRabbitMQ",
    "PrivateRedis",
    "Production",
    "Traffic",
    "check_outcome",
    "describe_steps",
    "drill_env",
    "postgres_rows",
    "service_port",
    "sqlite_rows",
    "start_production",
    "steps_in_flight",
    "wait_for_every_step",
    "wait_recovered",
)

#: What every drill promises: every accepted job finished this soon after the last component is back.
RECOVERY_BOUND_SECONDS = 60.0
#: The fake AI's answer time in the drills (seconds, plus up to ``AI_JITTER``): jobs stay in flight
#: long enough for an outage to catch them at every step, short enough for the drills to be quick.
AI_LATENCY = 1.5
AI_JITTER = 1.0
#: Seconds the proxy between a worker and PostgreSQL holds each chunk, both ways: a write of a few
#: round trips then takes a few hundred milliseconds, so the steps that are only database work
#: (validating_exam, processing_answers, finalizing_results) last long enough to be caught.
WORKER_DB_LATENCY = 0.04
#: Where an unfinished job can be, in order: waiting to be taken (``pending``), then each step a
#: worker runs.
IN_FLIGHT_STEPS = (
    "queued",
    "validating_exam",
    "processing_answers",
    "getting_ai_recommendations",
    "finalizing_results",
)


def drill_env(database_url: str, fake_ai_url: str, **extra: str) -> dict[str, str]:
    """``production_env`` with the drills' timings: a short stale-heartbeat period and time limit,
    an AI timeout well above the fake's latency, and no fallback (an AI failure would show)."""
    settings = {
        "JOB_STALE_AFTER": "10",
        "JOB_TIME_LIMIT": "120",
        "JOB_MAX_RETRIES": "3",
        "JOB_RETRY_BACKOFF": "0.5",
        "AI_API_TIMEOUT": "10",
        "AI_FALLBACK": "fail",
        **extra,
    }
    return production_env(database_url, fake_ai_url, **settings)


@dataclass
class Production:
    """One drill's running product: web, worker (one process), scheduler, fake AI.

    ``worker_env``: the worker's settings (its ``DATABASE_URL`` through ``worker_proxy`` when
    there is one); start another worker with it.
    """

    env: dict[str, str]
    web: ExamsServer
    worker: Worker
    scheduler: Scheduler
    ai: FakeAI
    worker_env: dict[str, str]
    worker_proxy: TcpProxy | None = None

    def logs(self) -> str:
        """Every product process's log so far."""
        return "\n".join(p.log() for p in (self.web, self.worker, self.scheduler))

    def outcome(self, database_url: str, traffic: Traffic, back_at: float) -> DrillOutcome:
        """:func:`check_outcome` of this product's jobs in ``database_url`` (PostgreSQL)."""
        rows = postgres_rows(database_url, traffic.prefix)
        return check_outcome(rows, traffic, back_at, ai_requests=self.ai.requests, logs=self.logs)


def start_production(
    stack: Stack,
    database_url: str,
    threads: int = 32,
    restartable_web: bool = False,
    worker_db_latency: float = 0.0,
    **extra: str,
) -> Production:
    """Migrate ``database_url``, then start the fake AI, a worker of ``threads`` threads, the web
    app and the scheduler (``extra``: settings, spelt as in the environment).

    ``restartable_web``: the web app listens on a port below the ephemeral range (see
    :func:`service_port`), so that it can be started again on it while clients keep trying.
    ``worker_db_latency``: the worker reaches PostgreSQL through a :class:`TcpProxy` holding each
    chunk this long (the web app and the scheduler go straight to it). The proxy outlives a
    restart of the server: while it is down a connection is accepted and closed at once.
    """
    ai = stack.fake_ai(latency=AI_LATENCY, jitter=AI_JITTER)
    env = drill_env(database_url, ai.base_url, **extra)
    stack.prepare(env)
    proxy = stack.proxy(pg_address(database_url), latency=worker_db_latency) if worker_db_latency else None
    worker_env = {**env, "DATABASE_URL": via_proxy(database_url, proxy)} if proxy is not None else env
    worker = stack.worker(worker_env, threads=threads, wait=False)
    if restartable_web:
        web = ExamsServer(env, stack.tmp / "web-0.log")
        web.port = service_port()
        web.base_url = f"http://127.0.0.1:{web.port}"
        web.args = ["serve", "--port", str(web.port)]
        web.health_url = f"{web.base_url}/health"
        stack.processes.append(web)
        web.start()
    else:
        web = stack.web(env)
    scheduler = stack.scheduler(env)
    worker.wait_booted()
    # Its first pass (reconciler, then the daily cleanup) is over: it runs every 10 s from now on.
    wait_until(lambda: "cleanup finished" in scheduler.log(), 60, "the scheduler's first pass")
    return Production(env, web, worker, scheduler, ai, worker_env, proxy)


def service_port() -> int:
    """A free port below the kernel's ephemeral range, for a service a drill stops and starts again.

    A client that keeps reconnecting to a port nobody listens on may be given that very port as
    its own source port (ports from ``free_port`` are ephemeral ones): it then connects to itself
    and holds the port, and the service cannot listen on it again.
    """
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    for _ in range(200):
        port = random.randrange(20_000, min(low, 32_768))
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port below the ephemeral range")


def _run(args: list[str], timeout: float = 60.0, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def _as_user(user: str, args: list[str]) -> list[str]:
    """``args`` run as ``user`` when this process is root (PostgreSQL refuses to run as root)."""
    if os.geteuid() != 0:
        return args
    runuser = shutil.which("runuser")
    if runuser is None:
        raise RuntimeError("runuser is not installed (needed to run PostgreSQL as its own user)")
    return [runuser, "-u", user, "--", *args]


def _private_dir(prefix: str, owner: str) -> Path:
    """A fresh directory under /tmp owned by ``owner`` (pytest's tmp_path is private to root)."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    path.chmod(0o755)
    if os.geteuid() == 0:
        shutil.chown(path, user=owner, group=owner)
    return path


# --- PostgreSQL -------------------------------------------------------------------------------


def _postgres_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=lambda p: int(p.split("/")[4]))
    binary = found[-1] if found else shutil.which(name)
    if binary is None:
        raise RuntimeError(f"{name} is not installed (the PostgreSQL drill starts a server of its own)")
    return binary


class PrivatePostgres:
    """A PostgreSQL server of this drill's own, on a free port (trust authentication, user postgres)."""

    def __init__(self) -> None:
        self.directory = _private_dir("exams-drill-pg-", "postgres")
        self.data = self.directory / "data"
        self.port = service_port()
        self.log_path = self.directory / "postgres.log"

    def _pg(self, tool: str, *args: str) -> list[str]:
        return _as_user("postgres", [_postgres_bin(tool), *args])

    def init(self) -> PrivatePostgres:
        options = ("-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8", "--locale=C")
        _run(self._pg("initdb", "-D", str(self.data), *options))
        return self

    def start(self) -> None:
        options = f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 -c fsync=off"
        options += " -c max_connections=200"
        _run(
            self._pg("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.log_path), "-w", "-t", "60", "start")
        )

    def stop(self, mode: str = "fast") -> None:
        """``pg_ctl stop -m fast`` (sessions told to go, clean shutdown) or ``-m immediate`` (a crash:
        recovery from the WAL at the next start)."""
        _run(self._pg("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop"))

    def running(self) -> bool:
        return _run(self._pg("pg_ctl", "-D", str(self.data), "status"), check=False).returncode == 0

    def database(self, name: str | None = None) -> str:
        """Create a database; its ``postgresql+asyncpg://`` URL."""
        name = name or f"exams_drill_{uuid.uuid4().hex[:8]}"
        asyncio.run(self._execute(f'CREATE DATABASE "{name}"'))
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{name}"

    async def _execute(self, statement: str) -> None:
        import asyncpg  # type: ignore[import-untyped]

        conn = await asyncpg.connect(f"postgresql://postgres@127.0.0.1:{self.port}/postgres", timeout=10)
        try:
            await conn.execute(statement)
        finally:
            await conn.close()

    def close(self) -> None:
        if self.data.exists() and self.running():
            with contextlib.suppress(Exception):
                self.stop("immediate")
        shutil.rmtree(self.directory, ignore_errors=True)


# --- Redis ------------------------------------------------------------------------------------------


class PrivateRedis(RedisServer):
    """``production_support.RedisServer`` that can be killed and started again on the same port."""

    def __init__(self, directory: Path) -> None:
        super().__init__(directory)
        self.port = service_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def kill(self) -> None:
        """SIGKILL: every queued message, delayed retry and unacknowledged message is gone."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


# --- RabbitMQ ---------------------------------------------------------------------------------------


class PrivateRabbitMQ:
    """A RabbitMQ node of this drill's own: its own node name, AMQP and distribution ports, data and
    logs under /tmp (owned by the ``rabbitmq`` user, which the server scripts switch to)."""

    def __init__(self) -> None:
        self.directory = _private_dir("exams-drill-rabbitmq-", "rabbitmq")
        self.port = service_port()
        self.dist_port = service_port()
        self.node = f"drill{uuid.uuid4().hex[:6]}@localhost"
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}/"
        config = self.directory / "rabbitmq.conf"
        config.write_text(f"listeners.tcp.local = 127.0.0.1:{self.port}\n")
        config.chmod(0o644)
        self.proc: subprocess.Popen[bytes] | None = None

    def _env(self) -> dict[str, str]:
        return {
            **os.environ,
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_CONFIG_FILE": str(self.directory / "rabbitmq.conf"),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(self.directory / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.directory / "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.directory / "enabled_plugins"),
            "RABBITMQ_PID_FILE": str(self.directory / "rabbitmq.pid"),
        }

    def start(self, timeout: float = 120.0) -> None:
        binary = shutil.which("rabbitmq-server") or "/usr/sbin/rabbitmq-server"
        if not Path(binary).exists():
            raise RuntimeError("rabbitmq-server is not installed (the RabbitMQ drill starts a node of its own)")
        with (self.directory / "server.out").open("ab") as out:
            self.proc = subprocess.Popen(
                [binary], env=self._env(), stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        wait_until(self._accepts, timeout, f"RabbitMQ node {self.node} on port {self.port}", interval=0.25)

    def _accepts(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            tail = (self.directory / "server.out").read_text(errors="replace")[-3000:]
            raise AssertionError(f"rabbitmq-server exited with {self.proc.returncode}:\n{tail}")
        import pika

        try:
            pika.BlockingConnection(pika.URLParameters(self.url + "?connection_attempts=1&socket_timeout=2")).close()
        except Exception:  # not up yet
            return False
        return True

    def stop(self) -> None:
        """``rabbitmqctl stop``: the node shuts down (durable queues and persistent messages are kept).

        Raises when ``rabbitmqctl stop`` fails or the node is still running a minute later: the
        node is then killed, which a drill must not take for a clean restart.
        """
        problem = self._stop()
        if problem is not None:
            raise RuntimeError(f"RabbitMQ node {self.node} did not stop cleanly (killed instead): {problem}")

    def _stop(self) -> str | None:
        """Stop the node (killed when ``rabbitmqctl stop`` fails or it lingers); what went wrong, if anything."""
        ctl = shutil.which("rabbitmqctl") or "/usr/sbin/rabbitmqctl"
        problem = None
        try:
            result = _run([ctl, "-n", self.node, "stop"], timeout=120, check=False)
        except subprocess.TimeoutExpired:
            problem = "rabbitmqctl stop did not return within 120 s"
        else:
            if result.returncode != 0:
                problem = f"rabbitmqctl stop exited with {result.returncode}:\n{result.stdout}\n{result.stderr}"
        if self.proc is not None:
            if problem is not None:
                self._kill()
            else:
                try:
                    self.proc.wait(60)
                except subprocess.TimeoutExpired:
                    problem = "rabbitmq-server still running 60 s after rabbitmqctl stop"
                    self._kill()
        return problem

    def _kill(self) -> None:
        pid_file = self.directory / "rabbitmq.pid"
        with contextlib.suppress(OSError, ValueError):
            os.kill(int(pid_file.read_text().strip()), signal.SIGKILL)
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(10)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self._stop()  # at teardown: however it goes, the node is gone afterwards
        shutil.rmtree(self.directory, ignore_errors=True)


# --- Traffic and the drill's verdict ----------------------------------------------------------------


@dataclass
class Traffic:
    """Submissions to ``base_url`` from a background thread, one every ``interval`` seconds, each
    from its own student (``<prefix>-<n>``): 202s, 503s and anything else are kept apart.

    ``random_gaps``: the gaps are drawn at random (exponentially, ``interval`` on average, as
    independent clients arrive), so that now and then a few submissions come close together.
    """

    base_url: str
    prefix: str = field(default_factory=lambda: f"drill-{uuid.uuid4().hex[:6]}")
    interval: float = 0.3
    random_gaps: bool = False
    accepted: dict[str, str] = field(default_factory=dict)
    refused: list[str] = field(default_factory=list)
    unreachable: list[str] = field(default_factory=list)
    unexpected: list[tuple[str, str]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    #: Numbers the students (``next`` is atomic: a burst may run beside the background thread).
    _numbers: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def start(self) -> Traffic:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="drill-traffic", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)
            self._thread = None

    def _run(self) -> None:
        with httpx.Client(base_url=self.base_url, timeout=15) as client:
            while not self._stop.is_set():
                started = time.monotonic()
                self.submit(client)
                gap = random.expovariate(1 / self.interval) if self.random_gaps else self.interval
                self._stop.wait(max(gap - (time.monotonic() - started), 0.0))

    def submit(self, client: httpx.Client) -> None:
        """One submission, its answer recorded."""
        student = f"{self.prefix}-{next(self._numbers)}"
        body = {"exam_code": "MATH-101", "student_id": student, "answers": MATH_ANSWERS}
        try:
            response = client.post("/api/exam-results/process", json=body)
        except httpx.TransportError as exc:
            self.unreachable.append(student)
            if not isinstance(exc, httpx.ConnectError):
                self.unexpected.append((student, f"{type(exc).__name__}: {exc}"))
            return
        if response.status_code == 202:
            self.accepted[student] = str(response.json()["job_id"])
        elif response.status_code == 503 and response.headers["content-type"].startswith("application/problem+json"):
            self.refused.append(student)
        else:
            self.unexpected.append((student, f"{response.status_code} {response.text[:300]}"))

    def burst(self, count: int) -> None:
        """``count`` submissions one after the other from this thread, as fast as they are answered."""
        with httpx.Client(base_url=self.base_url, timeout=15) as client:
            for _ in range(count):
                self.submit(client)

    def wait_accepted(self, count: int, timeout: float = 30.0) -> None:
        """Until ``count`` more submissions than now were accepted."""
        target = len(self.accepted) + count
        wait_until(lambda: len(self.accepted) >= target, timeout, f"{count} more accepted submissions")


_COLUMNS = "student_id, status, current_step, progress, attempts, error_message"


def postgres_rows(database_url: str, prefix: str) -> Callable[[], list[dict[str, Any]]]:
    """A reader of the drill's jobs as stored in PostgreSQL (straight to the server)."""

    def read() -> list[dict[str, Any]]:
        return db_rows(
            database_url,
            f"SELECT {_COLUMNS}, job_id::text AS job_id, result->>'recommendations_source' AS source"
            " FROM exam_processing_jobs WHERE student_id LIKE $1",
            f"{prefix}-%",
        )

    return read


def sqlite_rows(path: Path, prefix: str) -> Callable[[], list[dict[str, Any]]]:
    """A reader of the drill's jobs as stored in a SQLite file (read-only)."""

    def read() -> list[dict[str, Any]]:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=15)) as db:
            db.row_factory = sqlite3.Row
            rows = db.execute(
                f"SELECT {_COLUMNS}, job_id, json_extract(result, '$.recommendations_source') AS source"
                " FROM exam_processing_jobs WHERE student_id LIKE ?",
                (f"{prefix}-%",),
            ).fetchall()
        # GUID is BINARY(16) on SQLite
        return [{**dict(row), "job_id": str(uuid.UUID(bytes=row["job_id"]))} for row in rows]

    return read


def steps_in_flight(rows: list[dict[str, Any]]) -> Counter[str]:
    """How many unfinished jobs are at each of :data:`IN_FLIGHT_STEPS` (``queued``: ``pending``,
    whatever step a job handed back or retried will resume at)."""
    counts: Counter[str] = Counter(dict.fromkeys(IN_FLIGHT_STEPS, 0))
    for row in rows:
        if row["status"] == "pending":
            counts["queued"] += 1
        elif row["status"] == "processing":
            counts[str(row["current_step"])] += 1
    return counts


def describe_steps(counts: Counter[str]) -> str:
    """``queued 3, validating_exam 1, …`` (every step, zeros included)."""
    return ", ".join(f"{step} {counts[step]}" for step in IN_FLIGHT_STEPS)


def wait_for_every_step(
    read_rows: Callable[[], list[dict[str, Any]]],
    timeout: float = 30.0,
    steps: tuple[str, ...] = IN_FLIGHT_STEPS,
    interval: float = 0.05,
    at_least: dict[str, int] | None = None,
) -> Counter[str]:
    """Poll the drill's jobs until unfinished ones occupy every one of ``steps`` at once (at least
    ``at_least[step]`` jobs where given, else one); the counts of that moment
    (:func:`steps_in_flight`, every step). Call it right before the fault.

    Fails after ``timeout`` seconds, naming the most steps seen covered at once and the last counts.
    """
    started = time.monotonic()
    deadline = started + timeout
    best: Counter[str] = Counter()
    while True:
        counts = steps_in_flight(read_rows())
        if all(counts[step] >= (at_least or {}).get(step, 1) for step in steps):
            waited = time.monotonic() - started
            print(f"[drill] jobs at {', '.join(steps)} after {waited:.1f} s: {describe_steps(counts)}")
            return counts
        if sum(bool(counts[s]) for s in steps) > sum(bool(best[s]) for s in steps):
            best = counts
        if time.monotonic() > deadline:
            missing = [s for s in steps if not best[s]]
            raise AssertionError(
                f"the drill's jobs never occupied every step at once within {timeout:g} s: at best "
                f"{describe_steps(best)} (none at {', '.join(missing)}); last {describe_steps(counts)}"
            )
        time.sleep(interval)


def wait_recovered(
    read_rows: Callable[[], list[dict[str, Any]]],
    students: set[str],
    back_at: float,
    bound: float = RECOVERY_BOUND_SECONDS,
) -> list[dict[str, Any]]:
    """Wait until the jobs of ``students`` are all final, failing ``bound`` seconds after ``back_at``
    (``time.monotonic()`` when the last component came back); every row read at that point."""

    def all_final() -> list[dict[str, Any]] | None:
        rows = read_rows()
        mine = [r for r in rows if r["student_id"] in students]
        done = len(mine) == len(students) and all(r["status"] in ("completed", "failed", "cancelled") for r in mine)
        return rows if done else None

    try:
        return wait_until(all_final, max(bound - (time.monotonic() - back_at), 1.0), "every job to finish", 0.5)
    except AssertionError:
        rows = read_rows()
        unfinished = [r for r in rows if r["student_id"] in students and r["status"] in ("pending", "processing")]
        missing = students - {r["student_id"] for r in rows}
        message = f"{len(unfinished)} jobs unfinished {bound:g} s after recovery: {unfinished[:5]}; missing {missing}"
        raise AssertionError(message) from None


@dataclass
class DrillOutcome:
    """What a drill measured (printed, and quoted in docs/deployment.md's outage table)."""

    accepted: int
    refused: int
    recovered_after: float
    sources: Counter[str]
    attempts: Counter[int]

    def report(self, name: str, steps: Counter[str] | None = None) -> str:
        """Print (and return) the drill's ``[drill]`` line; ``steps``: the jobs in flight at each
        step when the fault hit (:func:`wait_for_every_step`)."""
        line = (
            f"[drill] {name}: {self.accepted} accepted, {self.refused} refused with 503, every job final "
            f"{self.recovered_after:.1f} s after the last component was back; sources {dict(self.sources)}, "
            f"attempts {dict(sorted(self.attempts.items()))}"
        )
        if steps is not None:
            line += f"; in flight when the fault hit: {describe_steps(steps)}"
        print(line)
        return line


def check_outcome(
    read_rows: Callable[[], list[dict[str, Any]]],
    traffic: Traffic,
    back_at: float,
    *,
    ai_requests: Callable[[], int] | None = None,
    sources: tuple[str, ...] = ("ai",),
    logs: Callable[[], str] | None = None,
    bound: float = RECOVERY_BOUND_SECONDS,
) -> DrillOutcome:
    """Every drill's end: nothing accepted lost, nothing refused half-written, nothing failed, every
    job final within ``bound`` seconds of ``back_at`` (``time.monotonic()`` when the last component
    came back), and (``ai_requests`` reads the fake AI's count) no AI answer paid for twice."""
    assert not traffic.unexpected, traffic.unexpected[:5]
    assert traffic.accepted, "no submission was accepted: nothing was drilled"

    rows = wait_recovered(read_rows, set(traffic.accepted), back_at, bound)
    recovered_after = time.monotonic() - back_at
    stored = {r["student_id"]: r for r in rows}
    # 0 accepted submissions lost; a 503 left nothing behind.
    assert {s: stored[s]["job_id"] for s in traffic.accepted if s in stored} == traffic.accepted
    assert set(traffic.accepted) <= set(stored), sorted(set(traffic.accepted) - set(stored))[:5]
    assert not set(traffic.refused) & set(stored), sorted(set(traffic.refused) & set(stored))[:5]
    # A submission whose connection was refused (web down) was never answered: not stored either way.
    assert set(stored) <= set(traffic.accepted) | set(traffic.unreachable)
    failed = [r for r in rows if r["status"] != "completed"]
    assert not failed, failed[:5]
    found = Counter(str(r["source"]) for r in rows)
    assert set(found) <= set(sources), found
    if ai_requests is not None:
        # Each job completed with the AI's answer needed one request; more would be an answer paid twice.
        requests = ai_requests()
        assert requests == found["ai"], (requests, found)
    records = json_lines(logs() if logs is not None else "")
    crashed = [r for r in records if r.get("event") in ("exam processing crashed", "exam processing failed")]
    assert not crashed, crashed[:3]
    return DrillOutcome(
        accepted=len(traffic.accepted),
        refused=len(traffic.refused),
        recovered_after=recovered_after,
        sources=found,
        attempts=Counter(int(r["attempts"]) for r in rows),
    )
