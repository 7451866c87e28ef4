"""Plumbing of the production-mode tests: brokers, outages, worker and scheduler processes, logs.

Everything here talks to real things: a private ``redis-server`` per test (no shared database
number to collide with another run), the machine's PostgreSQL and RabbitMQ (a fresh database and
a fresh virtual host per test), and :class:`TcpProxy`, a small TCP relay placed between the
product and a service so a test can cut the service off and bring it back without touching the
machine's shared servers. A missing service makes these helpers raise: the tests fail, never skip.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx

from support import (
    EXAMS,
    MATH_ANSWERS,
    RABBITMQ_URL,
    ExamsServer,
    FakeAIProcess,
    Process,
    base_env,
    free_port,
    json_lines,
    postgres_database,
    prepare_database,
)

__all__ = (
    "FakeAI",
    "RedisServer",
    "Scheduler",
    "Stack",
    "TcpProxy",
    "Worker",
    "count_events",
    "db_rows",
    "pg_address",
    "production_env",
    "rabbitmq_vhost",
    "submit_many",
    "via_proxy",
    "wait_until",
)

T = TypeVar("T")


def wait_until(check: Callable[[], T | None], timeout: float, what: str, interval: float = 0.2) -> T:
    """Poll ``check`` until it returns something truthy; fail naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        last = check()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what} (last: {last!r})")
        time.sleep(interval)


# --- PostgreSQL -------------------------------------------------------------------------------


def _asyncpg_dsn(database_url: str) -> str:
    return database_url.replace("postgresql+asyncpg://", "postgresql://", 1)


async def _fetch(database_url: str, sql: str, args: tuple[Any, ...]) -> list[dict[str, Any]]:
    import asyncpg

    conn = await asyncpg.connect(_asyncpg_dsn(database_url), timeout=5)
    try:
        return [dict(row) for row in await conn.fetch(sql, *args)]
    finally:
        await conn.close()


def db_rows(database_url: str, sql: str, *args: Any) -> list[dict[str, Any]]:
    """Run one query on the test database (straight to PostgreSQL, never through a proxy)."""
    return asyncio.run(_fetch(database_url, sql, args))


def pg_address(database_url: str) -> tuple[str, int]:
    """Host and port of a PostgreSQL URL."""
    parts = urlsplit(database_url)
    return parts.hostname or "127.0.0.1", parts.port or 5432


def via_proxy(url: str, proxy: TcpProxy) -> str:
    """``url`` with its host and port replaced by the proxy's."""
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)
    address = f"127.0.0.1:{proxy.port}"
    return parts._replace(netloc=f"{netloc[0]}@{address}" if len(netloc) == 2 else address).geturl()


# --- A TCP proxy that can simulate an outage --------------------------------------------------


class TcpProxy:
    """Relays ``127.0.0.1:port`` to ``target``; :meth:`cut` drops every connection and refuses
    new ones (as a crashed server would), :meth:`restore` accepts again on the same port.

    ``latency`` delays every relayed chunk, both ways (a service far away).
    """

    def __init__(self, target: tuple[str, int], latency: float = 0.0) -> None:
        self.target = target
        self.latency = latency
        self.port = free_port()
        self._listener: socket.socket | None = None
        self._accepting = threading.Event()
        self._accept_thread: threading.Thread | None = None
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()

    def start(self) -> TcpProxy:
        self.restore()
        return self

    def restore(self) -> None:
        """Accept connections again (after :meth:`cut`)."""
        if self._listener is not None:
            return
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(128)
        listener.settimeout(0.1)
        self._listener = listener
        self._accepting.set()
        self._accept_thread = threading.Thread(target=self._accept, args=(listener,), daemon=True)
        self._accept_thread.start()

    def cut(self) -> None:
        """Close every relayed connection and the listening socket: new connections are refused."""
        self._accepting.clear()
        if self._accept_thread is not None:
            self._accept_thread.join(5)
            self._accept_thread = None
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        with self._lock:
            sockets, self._sockets = self._sockets, set()
        for sock in sockets:
            _close(sock)

    close = cut

    def _accept(self, listener: socket.socket) -> None:
        while self._accepting.is_set():
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                _close(client)
                continue
            client.settimeout(None)
            upstream.settimeout(None)
            with self._lock:
                if not self._accepting.is_set():
                    _close(client)
                    _close(upstream)
                    return
                self._sockets.update((client, upstream))
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while chunk := source.recv(65536):
                if self.latency:
                    time.sleep(self.latency)
                sink.sendall(chunk)
        except OSError:
            pass
        finally:
            with self._lock:
                self._sockets.discard(source)
                self._sockets.discard(sink)
            _close(source)
            _close(sink)


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()


# --- Redis --------------------------------------------------------------------------------------


class RedisServer:
    """A private ``redis-server`` on a free port, in memory only, for one test."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> RedisServer:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (the production tests need Redis)")
        self.directory.mkdir(parents=True, exist_ok=True)
        args = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        args += ["--dir", str(self.directory), "--logfile", str(self.directory / "redis.log")]
        self.proc = subprocess.Popen(args)
        wait_until(self._pong, 10, f"redis-server on port {self.port}", interval=0.05)
        return self

    def _pong(self) -> bool:
        try:
            return bool(self.client().ping())
        except Exception:  # not up yet
            return False

    def client(self) -> Any:
        import redis

        return redis.Redis.from_url(self.url, socket_timeout=5)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


# --- RabbitMQ -----------------------------------------------------------------------------------


def _rabbitmqctl(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("rabbitmqctl") or "/usr/sbin/rabbitmqctl"
    return subprocess.run([binary, *args], capture_output=True, text=True, timeout=60, check=False)


def _check_amqp(url: str) -> None:
    import pika

    connection = pika.BlockingConnection(pika.URLParameters(url))
    connection.close()


@contextlib.contextmanager
def rabbitmq_vhost() -> Iterator[str]:
    """An AMQP URL on a fresh virtual host (deleted afterwards), or on the default one, purged.

    Raises when RabbitMQ does not accept a connection.
    """
    parts = urlsplit(RABBITMQ_URL)
    vhost = f"exams-test-{uuid.uuid4().hex[:8]}"
    user = parts.username or "guest"
    created = shutil.which("rabbitmqctl") is not None and _rabbitmqctl("add_vhost", vhost).returncode == 0
    if created:
        _rabbitmqctl("set_permissions", "-p", vhost, user, ".*", ".*", ".*")
        url = parts._replace(path=f"/{vhost}").geturl()
    else:
        url = RABBITMQ_URL
        _purge_exams_queues(url)
    try:
        _check_amqp(url)
        yield url
    finally:
        if created:
            _rabbitmqctl("delete_vhost", vhost)
        else:
            _purge_exams_queues(url)


def _purge_exams_queues(url: str) -> None:
    import pika

    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        for queue in ("exams", "exams.DQ", "exams.XQ"):
            channel = connection.channel()
            with contextlib.suppress(pika.exceptions.ChannelClosedByBroker):
                channel.queue_purge(queue)
    finally:
        connection.close()


# --- Product processes ----------------------------------------------------------------------------


class FakeAI(FakeAIProcess):
    """``exams fake-ai`` with an error rate, and jitter set through its control endpoint."""

    def __init__(self, log_path: Path, latency: float = 0.2, error_rate: float = 0.0, jitter: float = 0.0) -> None:
        super().__init__(log_path, latency=latency)
        self.args += ["--error-rate", str(error_rate)]
        self.jitter = jitter

    def start(self, wait: bool = True) -> FakeAI:
        super().start(wait)
        if self.jitter:
            self.set_timing(jitter=self.jitter)
        return self

    def set_timing(self, latency: float | None = None, jitter: float | None = None) -> None:
        """Change only the timing (the mode stays)."""
        body = {k: v for k, v in {"latency": latency, "jitter": jitter}.items() if v is not None}
        httpx.put(f"http://127.0.0.1:{self.port}/_fake/mode", json=body, timeout=5).raise_for_status()

    def stats(self) -> dict[str, Any]:
        return dict(httpx.get(f"http://127.0.0.1:{self.port}/_fake/stats", timeout=5).json())


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        with contextlib.suppress(OSError):
            found += [int(child) for child in task.read_text().split()]
    return found


class Worker(Process):
    """``exams worker --processes N --threads M``: Dramatiq's master and its worker processes, in a
    process group of their own so that nothing outlives the test, whatever the master does."""

    def __init__(self, env: Mapping[str, str], log_path: Path, processes: int = 1, threads: int = 8) -> None:
        super().__init__(
            ["worker", "--processes", str(processes), "--threads", str(threads)], env, log_path, health_url=None
        )
        self.processes = processes

    def start(self, wait: bool = True) -> Worker:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [EXAMS, *self.args],
                env={**os.environ, **self.env},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        if wait:
            self.wait_booted()
        return self

    def wait_booted(self) -> Worker:
        """Wait until every worker process is consuming."""
        wait_until(self._booted, 60, f"{self.processes} worker process(es) to boot ({self.log_path})")
        return self

    def _booted(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"exams worker exited with {self.proc.returncode}:\n{self.log()[-4000:]}")
        return self.log().count("is ready for action") >= self.processes

    def worker_pids(self) -> list[int]:
        """Pids of Dramatiq's worker processes (children of the master, which ``exams worker`` became)."""
        assert self.proc is not None
        return _children(self.proc.pid)

    def kill_group(self) -> None:
        """SIGKILL the master and every process it started."""
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> None:
        super().stop(sig, timeout)
        self.kill_group()  # whatever is left of the group


class Scheduler(Process):
    """``exams scheduler``: the reconciler every 10 s and the daily cleanup."""

    def __init__(self, env: Mapping[str, str], log_path: Path) -> None:
        super().__init__(["scheduler"], env, log_path, health_url=None)


def production_env(database_url: str, fake_ai_url: str, **extra: str) -> dict[str, str]:
    """:func:`support.base_env` for separate web, worker and scheduler processes (Redis by default).

    ``PROMETHEUS_MULTIPROC_DIR`` is left out when empty: prometheus_client switches to
    multiprocess mode when the variable merely exists, and an empty one means "write the metric
    files into the current directory".
    """
    env = base_env(database_url, fake_ai_url, **{"QUEUE_CONNECTION": "redis", **extra})
    if not env.get("PROMETHEUS_MULTIPROC_DIR"):
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    return env


# --- One test's whole production set-up -----------------------------------------------------------


class Stack:
    """Everything one test starts (services, proxies, product processes), stopped in reverse order."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self._exit = contextlib.ExitStack()
        self.processes: list[Process] = []
        self.workers: list[Worker] = []
        self.schedulers: list[Scheduler] = []

    def __enter__(self) -> Stack:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.stop_processes()
        finally:
            self._exit.close()

    def stop_processes(self) -> None:
        """Kill every product process (their graceful shutdown is not under test here, and the
        database, Redis and virtual host they used are thrown away next)."""
        for process in reversed(self.processes):
            if isinstance(process, Worker):
                process.kill_group()  # also when its master already died
            elif process.proc is not None and process.proc.poll() is None:
                process.proc.kill()
                process.proc.wait(10)

    def _log(self, name: str) -> Path:
        return self.tmp / f"{name}-{len(list(self.tmp.glob(name + '-*.log')))}.log"

    def enter(self, context: contextlib.AbstractContextManager[T]) -> T:
        """Enter ``context`` for the rest of the test (left after the processes are stopped)."""
        return self._exit.enter_context(context)

    def postgres(self) -> str:
        """A fresh PostgreSQL database (dropped at the end): its URL."""
        return self._exit.enter_context(postgres_database())

    def redis(self) -> RedisServer:
        server = RedisServer(self.tmp / f"redis-{uuid.uuid4().hex[:6]}").start()
        self._exit.callback(server.stop)
        return server

    def proxy(self, target: tuple[str, int], latency: float = 0.0) -> TcpProxy:
        proxy = TcpProxy(target, latency).start()
        self._exit.callback(proxy.close)
        return proxy

    def fake_ai(self, latency: float = 0.2, error_rate: float = 0.0, jitter: float = 0.0) -> FakeAI:
        ai = FakeAI(self._log("fake-ai"), latency=latency, error_rate=error_rate, jitter=jitter)
        self.processes.append(ai)
        return ai.start()

    def prepare(self, env: Mapping[str, str]) -> None:
        """Migrate the database and load the sample catalog (:func:`support.prepare_database`)."""
        prepare_database(env["DATABASE_URL"])

    def web(self, env: Mapping[str, str]) -> ExamsServer:
        server = ExamsServer(env, self._log("web"))
        self.processes.append(server)
        server.start()
        return server

    def worker(self, env: Mapping[str, str], processes: int = 1, threads: int = 8, wait: bool = True) -> Worker:
        worker = Worker(env, self._log("worker"), processes=processes, threads=threads)
        self.processes.append(worker)
        self.workers.append(worker)
        return worker.start(wait)

    def scheduler(self, env: Mapping[str, str]) -> Scheduler:
        scheduler = Scheduler(env, self._log("scheduler"))
        self.processes.append(scheduler)
        self.schedulers.append(scheduler)
        scheduler.start()
        return scheduler

    def worker_records(self) -> list[dict[str, Any]]:
        """Every JSON log record of every worker started so far."""
        return json_lines(*(worker.log() for worker in self.workers))


# --- Submissions and logs -------------------------------------------------------------------------


def submit_many(server: ExamsServer, count: int, concurrency: int = 16) -> list[str]:
    """Submit ``count`` exams from ``concurrency`` threads; return the job ids (every answer a 202)."""
    local = threading.local()

    def one(index: int) -> str:
        if not hasattr(local, "client"):
            local.client = httpx.Client(base_url=server.base_url, timeout=30)
        answers = dict(MATH_ANSWERS, q3=float(index % 7))  # a few different gradings
        body = {"exam_code": "MATH-101", "student_id": f"load-{index}", "answers": answers}
        response = local.client.post("/api/exam-results/process", json=body)
        assert response.status_code == 202, response.text
        return str(response.json()["job_id"])

    with ThreadPoolExecutor(concurrency) as pool:
        return list(pool.map(one, range(count)))


def count_events(records: Iterable[Mapping[str, Any]], event: str) -> Counter[str]:
    """How many records of ``event`` each job id has."""
    return Counter(str(r.get("job_id")) for r in records if r.get("event") == event)
