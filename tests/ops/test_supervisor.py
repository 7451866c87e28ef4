"""The supervisor programs of ops/supervisor run the product for real and lose no submission.

A real ``supervisord`` runs the repository's ``ops/supervisor/exams.conf`` (its install paths
rewritten into a temporary directory) against PostgreSQL, Redis and the fake AI: the three
programs come up, jobs complete, ``supervisorctl restart exams-worker:*`` lets the in-flight
job finish, and SIGKILLed worker processes are restarted with their job completed exactly once.
PostgreSQL and Redis are required: these tests fail, never skip, when either is down.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from support import (
    MATH_ANSWERS,
    REPO,
    SAMPLE_CATALOG,
    FakeAIProcess,
    free_port,
    json_lines,
    postgres_database,
    redis_test_url,
    run_exams,
)

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

CONF = REPO / "ops" / "supervisor" / "exams.conf"
BIN = Path(sys.executable).parent
REDIS_URL = os.environ.get("TEST_SUPERVISOR_REDIS_URL", redis_test_url(1))
WORKER = "exams-worker:exams-worker_00"
PROGRAMS = ("exams-web", WORKER, "exams-scheduler")


def _proc_ppid(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (2nd field) is in parentheses and may contain spaces.
    return int(stat.rsplit(")", 1)[1].split()[1])


def _proc_cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")[:-1]
    except OSError:
        return []


def _pids() -> list[int]:
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]


def _pids_with_env(marker: str) -> list[int]:
    found = []
    needle = marker.encode()
    for pid in _pids():
        try:
            if needle in Path(f"/proc/{pid}/environ").read_bytes():
                found.append(pid)
        except OSError:
            continue
    return found


def _threads(pid: int) -> int:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    match = re.search(r"^Threads:\s+(\d+)$", status, re.MULTILINE)
    return int(match.group(1)) if match else 0


def dramatiq_children(master: int) -> list[int]:
    """Processes Dramatiq's master forked: its workers and its metrics exporter."""
    cmdline = _proc_cmdline(master)
    return [pid for pid in _pids() if _proc_ppid(pid) == master and _proc_cmdline(pid) == cmdline]


def _listening_inodes(port: int) -> set[str]:
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:  # 0A = LISTEN
                inodes.add(fields[9])
    return inodes


def _holds_socket(pid: int, inodes: set[str]) -> bool:
    try:
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return False
    targets = {f"socket:[{inode}]" for inode in inodes}
    for fd in fds:
        try:
            if os.readlink(fd) in targets:
                return True
        except OSError:
            continue
    return False


def worker_children(master: int, exporter_port: int) -> list[int]:
    """Dramatiq's booted worker processes: not the exporter (it listens on its port), threads running."""
    inodes = _listening_inodes(exporter_port)
    return [pid for pid in dramatiq_children(master) if _threads(pid) > 1 and not _holds_socket(pid, inodes)]


def describe_children(master: int) -> str:
    return ", ".join(f"{pid} ({_threads(pid)} threads)" for pid in dramatiq_children(master))


def wait_for(what: str, check: Callable[[], Any], timeout: float) -> Any:
    """Poll ``check`` until it returns something truthy (generous timeouts: no timing asserts)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.2)


def render_conf(port: int, log_dir: Path) -> str:
    """The repository's exams.conf with its install-specific values replaced for this test."""
    text = CONF.read_text()
    for needle in ("/srv/exams/", "/var/log/exams/", "\nuser=exams\n", "--port 8000"):
        assert needle in text, f"{CONF} no longer contains {needle!r} (update this test and the docs)"
    text = text.replace("/srv/exams/", f"{REPO}/").replace("/var/log/exams/", f"{log_dir}/")
    # The test runs as whoever runs pytest; there is no `exams` user here.
    text = text.replace("\nuser=exams\n", "\n")
    return text.replace("--port 8000", f"--port {port}")


@dataclass
class Stack:
    """supervisord running exams.conf, plus what the tests need to drive and observe it."""

    tmp: Path
    conf: Path
    base_url: str
    fake_ai: FakeAIProcess
    env: dict[str, str]
    supervisord: subprocess.Popen[bytes]

    def ctl(self, *args: str, check: bool = True) -> str:
        result = subprocess.run(
            [str(BIN / "supervisorctl"), "-c", str(self.conf), *args],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        out = result.stdout + result.stderr
        if check and result.returncode != 0:
            raise AssertionError(f"supervisorctl {' '.join(args)} exited {result.returncode}:\n{out}")
        return out

    def states(self) -> dict[str, tuple[str, int | None]]:
        """``{name: (state, pid)}`` from ``supervisorctl status``."""
        states: dict[str, tuple[str, int | None]] = {}
        for line in self.ctl("status", check=False).splitlines():
            parts = line.split()
            if len(parts) >= 2:
                match = re.search(r"pid (\d+)", line)
                states[parts[0]] = (parts[1], int(match.group(1)) if match else None)
        return states

    def all_running(self) -> bool:
        states = self.states()
        return all(states.get(name, ("?", None))[0] == "RUNNING" for name in PROGRAMS)

    def workers(self, master: int, count: int = 2) -> list[int]:
        """Wait until ``master`` has ``count`` booted worker processes (--processes 2 in exams.conf)."""
        port = int(self.env["dramatiq_prom_port"])
        try:
            return list(
                wait_for(
                    f"{count} worker processes", lambda: len(w := worker_children(master, port)) == count and w, 30
                )
            )
        except AssertionError as exc:
            raise AssertionError(f"{exc}; children of {master}: {describe_children(master)}") from None

    def worker_pid(self) -> int | None:
        state, pid = self.states().get(WORKER, ("?", None))
        return pid if state == "RUNNING" else None

    def log(self, program: str) -> str:
        path = self.tmp / "log" / f"{program}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def logs(self) -> str:
        parts = [f"--- {name} ---\n{self.log(name)[-3000:]}" for name in ("web", "worker", "scheduler")]
        supervisord_log = self.tmp / "supervisord.log"
        if supervisord_log.exists():
            parts.append(f"--- supervisord ---\n{supervisord_log.read_text()[-3000:]}")
        return "\n".join(parts)

    def job_events(self, job_id: str, event: str) -> list[dict[str, Any]]:
        """JSON log lines of the workers for one job and one event name."""
        records = json_lines(self.log("worker"))
        return [r for r in records if r.get("event") == event and r.get("job_id") == job_id]

    def submit(self) -> str:
        body = {"exam_code": "MATH-101", "student_id": "s-1042", "answers": MATH_ANSWERS}
        response = httpx.post(f"{self.base_url}/api/exam-results/process", json=body, timeout=10)
        assert response.status_code == 202, response.text
        return str(response.json()["job_id"])

    def status(self, job_id: str) -> dict[str, Any]:
        response = httpx.get(f"{self.base_url}/api/exam-results/status/{job_id}", timeout=10)
        response.raise_for_status()
        return dict(response.json())

    def wait_step(self, job_id: str, step: str, timeout: float = 30) -> dict[str, Any]:
        def reached() -> dict[str, Any] | None:
            doc = self.status(job_id)
            assert doc["status"] not in ("completed", "failed"), f"job finished before {step}: {doc}"
            return doc if doc["current_step"] == step else None

        return dict(wait_for(f"job {job_id} in {step}", reached, timeout))

    def wait_final(self, job_id: str, timeout: float = 60) -> dict[str, Any]:
        def final() -> dict[str, Any] | None:
            doc = self.status(job_id)
            return doc if doc["status"] in ("completed", "failed") else None

        try:
            return dict(wait_for(f"job {job_id} to finish", final, timeout))
        except AssertionError as exc:
            raise AssertionError(f"{exc}: {self.status(job_id)}\n{self.logs()}") from None

    def completed_counter(self) -> float:
        """``exams_jobs_finished_total{status="completed"}`` from the web's /metrics."""
        text = httpx.get(f"{self.base_url}/metrics", timeout=10).text
        match = re.search(r'^exams_jobs_finished_total\{status="completed"\} (\S+)$', text, re.MULTILINE)
        return float(match.group(1)) if match else 0.0


def _kill_strays(marker: str) -> None:
    for pid in _pids_with_env(marker):
        if pid != os.getpid():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("supervisor")
    (tmp / "log").mkdir()
    redis.Redis.from_url(REDIS_URL).flushdb()  # fails (never skips) when Redis is down
    fake_ai = FakeAIProcess(tmp / "fake-ai.log", latency=3.0)
    fake_ai.start()
    marker = uuid.uuid4().hex
    port = free_port()
    supervisord: subprocess.Popen[bytes] | None = None
    try:
        with postgres_database() as database_url:
            env = {
                "DATABASE_URL": database_url,
                "QUEUE_CONNECTION": "redis",
                "REDIS_URL": REDIS_URL,
                "AI_API_BASE_URL": fake_ai.base_url,
                "AI_API_KEY": "test-key-not-secret",
                "AI_API_TIMEOUT": "20",
                "SECRET_KEY": "test-secret-key-not-secret-0123",
                "ADMIN_PASSWORD": "test-admin-password-not-secret",
                "JOB_MAX_RETRIES": "2",
                "JOB_RETRY_BACKOFF": "0.2",
                "JOB_STALE_AFTER": "6",
                "LOG_FORMAT": "json",
                "PROMETHEUS_MULTIPROC_DIR": str(tmp / "prometheus"),
                # Dramatiq's metrics exporter: not on the shared default port 9191.
                "dramatiq_prom_host": "127.0.0.1",
                "dramatiq_prom_port": str(free_port()),
                "EXAMS_SUPERVISOR_TEST": marker,
            }
            # Left by an earlier run of the set: a cold start must wipe it.
            (tmp / "prometheus" / ".pids").mkdir(parents=True)
            (tmp / "prometheus" / "counter_4194999.db").write_bytes(b"\0" * 64)
            (tmp / "prometheus" / ".pids" / "4194999").touch()
            run_exams(["migrate"], env)
            run_exams(["catalog", "load", str(SAMPLE_CATALOG)], env)
            (tmp / "exams.conf").write_text(render_conf(port, tmp / "log"))
            conf = tmp / "supervisord.conf"
            conf.write_text(
                "\n".join(
                    [
                        "[unix_http_server]",
                        f"file={tmp}/supervisor.sock",
                        "[supervisord]",
                        f"logfile={tmp}/supervisord.log",
                        f"pidfile={tmp}/supervisord.pid",
                        f"childlogdir={tmp}/log",
                        "nodaemon=true",
                        "[rpcinterface:supervisor]",
                        "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface",
                        "[supervisorctl]",
                        f"serverurl=unix://{tmp}/supervisor.sock",
                        "[include]",
                        f"files={tmp}/exams.conf",
                        "",
                    ]
                )
            )
            supervisord = subprocess.Popen(
                [str(BIN / "supervisord"), "-c", str(conf)],
                env={**os.environ, **env},
                stdout=(tmp / "supervisord.out").open("wb"),
                stderr=subprocess.STDOUT,
            )
            stack = Stack(tmp, conf, f"http://127.0.0.1:{port}", fake_ai, env, supervisord)
            try:
                wait_for("all three programs RUNNING", stack.all_running, 60)
                wait_for("/ready", lambda: _ready(stack.base_url), 30)
            except AssertionError as exc:
                raise AssertionError(f"{exc}\n{stack.states()}\n{stack.logs()}") from None
            try:
                yield stack
            finally:
                stack.ctl("shutdown", check=False)
                try:
                    supervisord.wait(60)
                except subprocess.TimeoutExpired:
                    supervisord.kill()
                    supervisord.wait(10)
                _kill_strays(marker)
    finally:
        if supervisord is not None and supervisord.poll() is None:
            supervisord.kill()
            supervisord.wait(10)
        _kill_strays(marker)
        fake_ai.stop()


def _ready(base_url: str) -> bool:
    try:
        return httpx.get(f"{base_url}/ready", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def test_three_programs_run_and_jobs_complete(stack: Stack) -> None:
    states = stack.states()
    assert {name: states[name][0] for name in PROGRAMS} == dict.fromkeys(PROGRAMS, "RUNNING")
    # exams-run.sh wiped the metrics directory when the whole set started.
    assert not (stack.tmp / "prometheus" / "counter_4194999.db").exists()
    master = stack.worker_pid()
    assert master is not None
    # `exams worker` execs Dramatiq's master: supervisor's pid and signals are Dramatiq's own.
    cmdline = _proc_cmdline(master)
    assert Path(cmdline[0]).name.startswith("python"), cmdline
    assert "server.worker_main" in cmdline, cmdline
    stack.workers(master)

    job_ids = [stack.submit() for _ in range(3)]
    for job_id in job_ids:
        doc = stack.wait_final(job_id)
        assert doc["status"] == "completed", doc
        assert doc["progress"] == 100
        assert doc["result"]["recommendations_source"] == "ai"
        assert doc["attempts"] == 1
    # Workers count into the shared PROMETHEUS_MULTIPROC_DIR; the web app's /metrics shows it.
    assert stack.completed_counter() >= 3


def test_restart_worker_group_lets_the_running_job_finish(stack: Stack) -> None:
    master = stack.worker_pid()
    counter_before = stack.completed_counter()
    ai_before = stack.fake_ai.requests()
    job_id = stack.submit()
    stack.wait_step(job_id, "getting_ai_recommendations")

    started = time.monotonic()
    out = stack.ctl("restart", "exams-worker:*")
    restarted = time.monotonic() - started
    assert f"{WORKER}: stopped" in out, out
    assert f"{WORKER}: started" in out, out
    new_master = stack.worker_pid()
    assert new_master is not None
    assert new_master != master

    doc = stack.wait_final(job_id)
    print(f"restart exams-worker:* took {restarted:.1f} s; job final {time.monotonic() - started:.1f} s after it began")
    assert doc["status"] == "completed", doc
    assert doc["result"] is not None
    # The stopping worker finished the job: one attempt, one AI call, one completion.
    assert doc["attempts"] == 1, doc
    assert stack.fake_ai.requests() - ai_before == 1
    assert len(stack.job_events(job_id, "exam processing completed")) == 1
    # One SIGTERM per child (stopasgroup=false): a second one would make Dramatiq kill them.
    assert "Killing worker process" not in stack.log("worker")
    # Restarting the workers alone keeps the shared metrics files: counters never go back.
    assert stack.completed_counter() >= counter_before + 1


def test_killed_worker_processes_are_restarted_and_the_job_completes_once(stack: Stack) -> None:
    master = stack.worker_pid()
    assert master is not None
    ai_before = stack.fake_ai.requests()
    job_id = stack.submit()
    stack.wait_step(job_id, "getting_ai_recommendations")
    # The AI step first takes a slot from the shared AI guard: kill only once the request is at
    # the fake AI, so that the killed attempt is one whose AI answer is never received.
    deadline = time.monotonic() + 20
    while stack.fake_ai.requests() == ai_before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert stack.fake_ai.requests() == ai_before + 1
    stack.workers(master)
    children = dramatiq_children(master)
    # Kill every process Dramatiq forked, so the one holding the job is certainly among them.
    killed = time.monotonic()
    for pid in children:
        os.kill(pid, signal.SIGKILL)

    # Dramatiq's master exits when a child dies; supervisor starts the program again.
    new_master = wait_for(
        "supervisor to restart exams-worker",
        lambda: (pid := stack.worker_pid()) not in (None, master) and pid,
        60,
    )
    stack.workers(new_master)
    back = time.monotonic() - killed
    assert "exited: exams-worker_00 (exit status 1; not expected)" in (stack.tmp / "supervisord.log").read_text()

    doc = stack.wait_final(job_id)
    print(f"workers back {back:.1f} s after SIGKILL; job final after {time.monotonic() - killed:.1f} s")
    assert doc["status"] == "completed", doc
    assert doc["result"]["recommendations"], doc
    # The killed attempt counts: the job was picked up again and run to the end once.
    assert doc["attempts"] == 2, doc
    assert stack.fake_ai.requests() - ai_before == 2  # the killed attempt's AI answer was never received
    assert len(stack.job_events(job_id, "exam processing completed")) == 1
    # A late duplicate delivery (the scheduler's re-send or Redis' redelivery) is skipped, never re-run.
    assert stack.status(job_id)["attempts"] == 2
