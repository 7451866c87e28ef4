"""``GET /metrics``: SPEC's names, types and labels.

Single-process mode (no ``PROMETHEUS_MULTIPROC_DIR``, embedded worker) through a real, fresh
``exams serve``: the test counts from zero, and counters are per process (in the test process
they hold every in-process test's jobs). Multiprocess mode through real processes (a separate
``exams worker`` on Redis sharing the directory with the web app; its log is checked here too,
since it runs here). A scrape while the broker is unreachable, in process. Redis is required:
a missing server fails, never skips.
"""

from __future__ import annotations

import os
import re
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import redis
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from support import (
    MATH_ANSWERS,
    ExamsApp,
    ExamsServer,
    FakeAIProcess,
    Process,
    app_settings,
    base_env,
    free_port,
    json_lines,
    redis_test_url,
    sqlite_url,
)

METRICS_REDIS_URL = os.environ.get("TEST_METRICS_REDIS_URL", redis_test_url(2))

# SPEC.md "Metrics": exposition name -> (type, label names).
SPEC_METRICS: dict[str, tuple[str, frozenset[str]]] = {
    "exams_jobs_submitted_total": ("counter", frozenset()),
    "exams_jobs_finished_total": ("counter", frozenset({"status"})),
    "exams_job_retries_total": ("counter", frozenset()),
    "exams_job_duration_seconds": ("histogram", frozenset()),
    "exams_job_stage_duration_seconds": ("histogram", frozenset({"stage"})),
    "exams_jobs": ("gauge", frozenset({"status"})),
    "exams_jobs_oldest_pending_seconds": ("gauge", frozenset()),
    "exams_jobs_stalled": ("gauge", frozenset()),
    "exams_ai_request_duration_seconds": ("histogram", frozenset()),
    "exams_ai_requests_total": ("counter", frozenset({"outcome"})),
    "exams_queue_messages": ("gauge", frozenset({"state"})),
    "exams_workers": ("gauge", frozenset()),
}
# Label values SPEC fixes (the whole set must be exposed, so a first increase is visible).
SPEC_LABEL_VALUES = {
    ("exams_jobs_finished_total", "status"): {"completed", "failed", "cancelled"},
    ("exams_ai_requests_total", "outcome"): {"success", "timeout", "error", "disabled"},
    ("exams_jobs", "status"): {"pending", "processing", "completed", "failed", "cancelled"},
    ("exams_queue_messages", "state"): {"ready", "delayed", "dead"},
}
STAGES = {"validating_exam", "processing_answers", "getting_ai_recommendations", "finalizing_results"}
UUID_LIKE = re.compile(r"[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}", re.IGNORECASE)
STUDENT_ID = "s-1042"  # what support.ExamsServer.submit sends


# --- helpers --------------------------------------------------------------------------------


class Scrape:
    """One parsed ``/metrics`` answer."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.families: dict[str, Metric] = {}
        for family in text_string_to_metric_families(text):
            # The parser names a counter family without ``_total``; index it by its series name.
            name = f"{family.name}_total" if family.type == "counter" else family.name
            self.families[name] = family

    def value(self, sample_name: str, **labels: str) -> float:
        """The value of the one sample with this name and labels (pid labels ignored)."""
        found = [
            sample.value
            for family in self.families.values()
            for sample in family.samples
            if sample.name == sample_name and {k: v for k, v in sample.labels.items() if k != "pid"} == labels
        ]
        assert len(found) == 1, f"{sample_name}{labels}: {len(found)} samples"
        return found[0]

    def label_values(self) -> set[str]:
        return {value for family in self.families.values() for s in family.samples for value in s.labels.values()}


def scrape(server: ExamsServer | ExamsApp) -> Scrape:
    if isinstance(server, ExamsApp):
        response = server.http.get("/metrics")
    else:
        response = httpx.get(f"{server.base_url}/metrics", timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return Scrape(response.text)


def scrape_until(server: ExamsServer, ready: Callable[[Scrape], bool], timeout: float = 60.0) -> Scrape:
    """Scrape until ``ready`` holds: the database gauges are cached for a few seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = scrape(server)
        if ready(result) or time.monotonic() > deadline:
            return result
        time.sleep(0.5)


def start_without_multiproc(make_server: Callable[..., ExamsServer], **env: str) -> ExamsServer:
    """A server with ``PROMETHEUS_MULTIPROC_DIR`` unset, as a plain ``exams serve`` runs.

    (``base_env`` sets it to ``""``, which prometheus-client treats as multiprocess mode.)
    """
    server = make_server(start=False, **env)
    server.env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    return server.start()


def run_job(server: ExamsServer, answers: dict[str, object] | None = None) -> tuple[str, dict[str, object]]:
    response = server.submit(answers)
    assert response.status_code == 202, response.text
    job_id = str(response.json()["job_id"])
    final, _ = server.wait_final(job_id, timeout=60)
    return job_id, final


def assert_spec_metrics(result: Scrape, after_jobs: bool = True) -> None:
    """Every SPEC metric is there with its type and exactly its labels.

    The step histogram has a series per step from start-up, before the first job.
    """
    for name, (kind, labels) in SPEC_METRICS.items():
        family = result.families.get(name)
        assert family is not None, f"{name} missing from /metrics"
        assert family.type == kind, f"{name} is a {family.type}, SPEC says {kind}"
        assert family.samples or not after_jobs, f"{name} has no samples"
        for sample in family.samples:
            seen = set(sample.labels) - {"le"}
            assert seen == labels, f"{sample.name} has labels {sorted(seen)}, SPEC says {sorted(labels)}"
    for (name, label), values in SPEC_LABEL_VALUES.items():
        exposed = {s.labels[label] for s in result.families[name].samples}
        assert exposed == values, f"{name}{{{label}}} exposes {sorted(exposed)}"
    stages = {s.labels["stage"] for s in result.families["exams_job_stage_duration_seconds"].samples}
    assert stages == STAGES, stages


def assert_no_ids_in_labels(result: Scrape, job_ids: list[str]) -> None:
    for value in result.label_values():
        assert not UUID_LIKE.search(value), f"label value looks like an id: {value!r}"
        for forbidden in (STUDENT_ID, "MATH-101", "BIO-201", *job_ids):
            assert forbidden.lower() not in value.lower(), f"label value {value!r} carries {forbidden!r}"


# --- single-process mode --------------------------------------------------------------------


def test_spec_metrics_move_with_jobs_and_carry_no_ids(
    make_server: Callable[..., ExamsServer], fake_ai_http: FakeAIProcess
) -> None:
    server = start_without_multiproc(make_server, JOB_MAX_RETRIES="1")
    before = scrape(server)
    assert_spec_metrics(before, after_jobs=False)
    assert before.value("exams_jobs_submitted_total") == 0
    assert before.value("exams_workers") >= 1, "the embedded worker must report its heartbeat"

    completed_id, final = run_job(server)
    assert final["status"] == "completed", f"{final}\n{server.log()[-4000:]}"
    # Every AI call fails: the retry fails too and the job ends failed.
    fake_ai_http.set_mode("error_500")
    failed_id, final = run_job(server)
    assert final["status"] == "failed", final
    fake_ai_http.set_mode("ok")

    # Routes with ids in their path, a 404 with an unknown id, an unrouted path with a student id.
    for path in (
        "/api/exams",
        "/api/exams/MATH-101",
        f"/api/exam-results/status/{completed_id}",
        f"/api/exam-results/status/{uuid.uuid4()}",
        f"/no-such-page/{STUDENT_ID}",
    ):
        httpx.get(f"{server.base_url}{path}", timeout=10)
    unknown_exam = server.submit(MATH_ANSWERS, exam_code="MATH-101-NOPE")
    assert unknown_exam.status_code == 422

    after = scrape_until(
        server, lambda r: r.value("exams_jobs", status="completed") + r.value("exams_jobs", status="failed") == 2
    )
    assert_spec_metrics(after)
    assert after.value("exams_jobs_submitted_total") == 2
    assert after.value("exams_jobs_finished_total", status="completed") == 1
    assert after.value("exams_jobs_finished_total", status="failed") == 1
    assert after.value("exams_job_retries_total") >= 1
    assert after.value("exams_ai_requests_total", outcome="success") == 1
    assert after.value("exams_ai_requests_total", outcome="error") >= 1
    assert after.value("exams_ai_requests_total", outcome="timeout") == 0
    assert after.value("exams_job_duration_seconds_count") == 2
    assert after.value("exams_ai_request_duration_seconds_count") >= 2
    for stage in ("validating_exam", "processing_answers", "finalizing_results"):
        assert after.value("exams_job_stage_duration_seconds_count", stage=stage) >= 1
    # Gauges read from the database.
    assert after.value("exams_jobs", status="completed") == 1
    assert after.value("exams_jobs", status="failed") == 1
    assert after.value("exams_jobs", status="pending") == 0
    assert after.value("exams_jobs_oldest_pending_seconds") == 0
    assert after.value("exams_database_up") == 1
    assert after.value("exams_broker_up") == 1
    assert after.value("exams_workers") >= 1
    assert after.value("exams_jobs_stalled") == 0

    # Litestar's request metrics group paths by route template.
    http_paths = {s.labels["path"] for s in after.families["exams_http_requests_total"].samples}
    assert "/api/exam-results/status/{job_id}" in http_paths
    assert_no_ids_in_labels(after, [completed_id, failed_id])

    # Buckets fit a ~35 s job and a millisecond API call.
    job_buckets = {
        float(s.labels["le"]) for s in after.families["exams_job_duration_seconds"].samples if "le" in s.labels
    }
    assert any(30 <= le <= 45 for le in job_buckets), sorted(job_buckets)
    assert max(le for le in job_buckets if le != float("inf")) >= 300
    http_buckets = {
        float(s.labels["le"]) for s in after.families["exams_http_request_duration_seconds"].samples if "le" in s.labels
    }
    assert min(http_buckets) <= 0.01, sorted(http_buckets)


def test_scrape_answers_when_the_broker_is_unreachable(tmp_path: Path) -> None:
    settings = app_settings(
        sqlite_url(tmp_path), "http://127.0.0.1:9/v1", QUEUE_CONNECTION="redis", REDIS_URL="redis://127.0.0.1:1/0"
    )
    assert not settings.prometheus_multiproc_dir
    server = ExamsApp(settings).prepare()
    server.start()
    try:
        for _ in range(2):  # computed, then served from the cache
            result = scrape(server)
            assert result.value("exams_broker_up") == 0
            assert result.value("exams_database_up") == 1
            assert result.value("exams_jobs", status="pending") == 0
            assert "exams_queue_messages" not in result.families
            assert "exams_jobs_submitted_total" in result.families
    finally:
        server.stop()
    assert json_lines(server.log()), "the app's log was not captured"
    assert "Traceback" not in server.log(), server.log()[-3000:]


# --- multiprocess mode ----------------------------------------------------------------------


@dataclass
class RedisStack:
    """``exams serve`` and one ``exams worker`` on Redis, sharing one PROMETHEUS_MULTIPROC_DIR."""

    server: ExamsServer
    worker: Process
    metrics_dir: Path
    exporter_port: int


@pytest.fixture(scope="module")
def redis_stack(tmp_path_factory: pytest.TempPathFactory, fake_ai_process: FakeAIProcess) -> Iterator[RedisStack]:
    redis.Redis.from_url(METRICS_REDIS_URL).flushdb()  # fails (never skips) when Redis is down
    tmp = tmp_path_factory.mktemp("metrics-redis")
    metrics_dir = tmp / "prometheus"
    metrics_dir.mkdir()
    exporter_port = free_port()
    env = base_env(
        sqlite_url(tmp),
        fake_ai_process.base_url,
        QUEUE_CONNECTION="redis",
        REDIS_URL=METRICS_REDIS_URL,
        PROMETHEUS_MULTIPROC_DIR=str(metrics_dir),
        # Dramatiq's exporter for worker hosts without a web app (default 0.0.0.0:9191).
        dramatiq_prom_host="127.0.0.1",
        dramatiq_prom_port=str(exporter_port),
    )
    server = ExamsServer(env, tmp / "server.log").prepare()
    worker = Process(["worker", "--processes", "1", "--threads", "2"], env, tmp / "worker.log", None)
    try:
        server.start()
        worker.start()
        # Consuming before any test looks at its log (a test may run first in its process).
        deadline = time.monotonic() + 60
        while "is ready for action" not in worker.log():
            assert time.monotonic() < deadline, f"exams worker did not boot:\n{worker.log()[-4000:]}"
            time.sleep(0.1)
        yield RedisStack(server, worker, metrics_dir, exporter_port)
    finally:
        worker.stop()
        server.stop()
        redis.Redis.from_url(METRICS_REDIS_URL).flushdb()


def test_worker_process_metrics_reach_the_web_metrics(redis_stack: RedisStack, fake_ai_http: FakeAIProcess) -> None:
    server, worker = redis_stack.server, redis_stack.worker
    job_id, final = run_job(server)
    assert final["status"] == "completed", f"{final}\n--- worker log ---\n{worker.log()[-3000:]}"

    result = scrape(server)
    assert_spec_metrics(result)
    assert result.value("exams_jobs_submitted_total") == 1  # counted by the web process
    # Counted by the worker process, merged by the web process from the shared directory.
    assert result.value("exams_jobs_finished_total", status="completed") == 1
    assert result.value("exams_ai_requests_total", outcome="success") == 1
    assert result.value("exams_job_stage_duration_seconds_count", stage="getting_ai_recommendations") == 1
    assert result.value("exams_workers") >= 1
    assert result.value("exams_broker_up") == 1
    assert result.value("exams_queue_messages", state="ready") >= 0
    # Dramatiq's own Prometheus middleware, from the worker process.
    assert result.value("dramatiq_messages_total", queue_name="exams", actor_name="process_exam") == 1
    assert "exams_http_requests_total" in result.families
    assert_no_ids_in_labels(result, [job_id])
    files = sorted(p.name for p in redis_stack.metrics_dir.glob("*.db"))
    assert len({name.rsplit("_", 1)[-1] for name in files}) >= 2, f"expected web and worker files: {files}"


def test_dramatiq_exporter_serves_the_shared_metrics(redis_stack: RedisStack) -> None:
    exporter = httpx.get(f"http://127.0.0.1:{redis_stack.exporter_port}/metrics", timeout=10)
    assert exporter.status_code == 200
    result = Scrape(exporter.text)
    assert "exams_jobs_finished_total" in result.families
    assert "dramatiq_messages_total" in result.families


def _worker_log_records(stack: RedisStack) -> tuple[list[str], list[dict[str, object]]]:
    lines = [line for line in stack.worker.log().splitlines() if line.strip()]
    return lines, list(json_lines(stack.worker.log()))


def test_worker_job_log_lines_carry_the_job_context(redis_stack: RedisStack, fake_ai_http: FakeAIProcess) -> None:
    """(The worker runs here, so its log is checked here: the same fields as the web's.)"""
    job_id, final = run_job(redis_stack.server)
    assert final["status"] == "completed", final
    _, records = _worker_log_records(redis_stack)
    mine = [r for r in records if r.get("job_id") == job_id]
    assert [r["event"] for r in mine][-1:] == ["exam processing completed"], mine
    for record in records:
        if "job_id" in record:
            assert all(field in record for field in ("exam_code", "step", "attempt")), record


def test_every_worker_log_line_is_json(redis_stack: RedisStack) -> None:
    lines, records = _worker_log_records(redis_stack)
    assert lines
    not_json = [line for line in lines if not line.lstrip().startswith("{")]
    assert not not_json, not_json[:5]
    assert len(records) == len(lines)
