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
- :class:`Traffic`: submissions at a steady pace from a background thread, every answer kept;
  :func:`check_outcome` asserts what every drill must end with.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from production_support import FakeAI, RedisServer, Scheduler, Stack, Worker, db_rows, production_env, wait_until

from support import MATH_ANSWERS, ExamsServer, json_lines

__all__ = (
    "DrillOutcome",
    "PrivatePostgres",
    "PrivateRabbitMQ",
    "PrivateRedis",
    "Production",
    "Traffic",
    "check_outcome",
    "drill_env",
    "postgres_rows",
    "service_port",
    "sqlite_rows",
    "start_production",
    "wait_recovered",
)

#: What every drill promises: every accepted job finished this soon after the last component is back.
RECOVERY_BOUND_SECONDS = 60.0
#: The fake AI's answer time in the drills (seconds, plus up to ``AI_JITTER``): jobs stay in flight
#: long enough for an outage to catch them at every step, short enough for the drills to be quick.
AI_LATENCY = 1.5
AI_JITTER = 1.0


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
    """One drill's running product: web, worker (one process), scheduler, fake AI."""

    env: dict[str, str]
    web: ExamsServer
    worker: Worker
    scheduler: Scheduler
    ai: FakeAI

    def logs(self) -> str:
        """Every product process's log so far."""
        return "\n".join(p.log() for p in (self.web, self.worker, self.scheduler))

    def outcome(self, database_url: str, traffic: Traffic, back_at: float) -> DrillOutcome:
        """:func:`check_outcome` of this product's jobs in ``database_url`` (PostgreSQL)."""
        rows = postgres_rows(database_url, traffic.prefix)
        return check_outcome(rows, traffic, back_at, ai_requests=self.ai.requests, logs=self.logs)


def start_production(
    stack: Stack, database_url: str, threads: int = 32, restartable_web: bool = False, **extra: str
) -> Production:
    """Migrate ``database_url``, then start the fake AI, a worker of ``threads`` threads, the web
    app and the scheduler (``extra``: settings, spelt as in the environment).

    ``restartable_web``: the web app listens on a port below the ephemeral range (see
    :func:`service_port`), so that it can be started again on it while clients keep trying.
    """
    ai = stack.fake_ai(latency=AI_LATENCY, jitter=AI_JITTER)
    env = drill_env(database_url, ai.base_url, **extra)
    stack.prepare(env)
    worker = stack.worker(env, threads=threads, wait=False)
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
    return Production(env, web, worker, scheduler, ai)


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
        """``rabbitmqctl stop``: the node shuts down (durable queues and persistent messages are kept)."""
        ctl = shutil.which("rabbitmqctl") or "/usr/sbin/rabbitmqctl"
        _run([ctl, "-n", self.node, "stop"], timeout=120, check=False)
        if self.proc is not None:
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self._kill()

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
            self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)


# --- Traffic and the drill's verdict ----------------------------------------------------------------


@dataclass
class Traffic:
    """Submissions to ``base_url`` from a background thread, one every ``interval`` seconds, each
    from its own student (``<prefix>-<n>``): 202s, 503s and anything else are kept apart."""

    base_url: str
    prefix: str = field(default_factory=lambda: f"drill-{uuid.uuid4().hex[:6]}")
    interval: float = 0.3
    accepted: dict[str, str] = field(default_factory=dict)
    refused: list[str] = field(default_factory=list)
    unreachable: list[str] = field(default_factory=list)
    unexpected: list[tuple[str, str]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _count: int = 0

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
                self._stop.wait(max(self.interval - (time.monotonic() - started), 0.0))

    def submit(self, client: httpx.Client) -> None:
        """One submission, its answer recorded."""
        self._count += 1
        student = f"{self.prefix}-{self._count}"
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

    def report(self, name: str) -> str:
        line = (
            f"[drill] {name}: {self.accepted} accepted, {self.refused} refused with 503, every job final "
            f"{self.recovered_after:.1f} s after the last component was back; sources {dict(self.sources)}, "
            f"attempts {dict(sorted(self.attempts.items()))}"
        )
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
