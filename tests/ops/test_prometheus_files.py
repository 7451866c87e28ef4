"""The Prometheus/Alertmanager files in ops/prometheus are valid, tested, and speak SPEC's names.

promtool and amtool are required (Debian packages ``prometheus`` and
``prometheus-alertmanager``, installed by ``make system-deps``): a missing binary fails
these tests, it never skips them.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PROM_DIR = ROOT / "ops" / "prometheus"
MONITORING_DOC = ROOT / "docs" / "monitoring.md"

SPEC_ALERTS = {
    "ExamJobsFailed",
    "ExamJobFailureRateHigh",
    "ExamJobsStuckPending",
    "ExamJobsStalled",
    "ExamWorkersDown",
    "ExamAIErrors",
    "ExamAISlow",
    "ExamAICircuitOpen",
    "ExamMetricsDown",
}
#: Alerts beyond SPEC's, each with its runbook in docs/monitoring.md.
EXTRA_ALERTS = {"ExamSchedulerDown"}
ALERTS = SPEC_ALERTS | EXTRA_ALERTS
#: The one base of every ``runbook_url`` (replaced at install time: docs/monitoring.md).
RUNBOOK_BASE = "https://git.example.org/exams/blob/main/docs"
# SPEC.md "Metrics"; histograms may also appear as their _bucket/_sum/_count series.
COUNTERS_AND_GAUGES = {
    "exams_jobs_submitted_total",
    "exams_jobs_finished_total",
    "exams_job_retries_total",
    "exams_jobs",
    "exams_jobs_oldest_pending_seconds",
    "exams_jobs_stalled",
    "exams_ai_requests_total",
    "exams_queue_messages",
    "exams_workers",
    "exams_ai_in_flight",
    "exams_ai_circuit_open",
    "exams_ai_fallbacks_total",
}
#: Documented in docs/monitoring.md beyond SPEC's table.
EXTRA_METRICS = {"exams_scheduler_last_run_timestamp_seconds"}
HISTOGRAMS = {
    "exams_job_duration_seconds",
    "exams_job_stage_duration_seconds",
    "exams_ai_request_duration_seconds",
}
ALLOWED_METRICS = (
    COUNTERS_AND_GAUGES
    | EXTRA_METRICS
    | HISTOGRAMS
    | {f"{h}{suffix}" for h in HISTOGRAMS for suffix in ("_bucket", "_sum", "_count")}
)


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(
            f"{name} is not installed: run `make system-deps` (Debian packages prometheus, prometheus-alertmanager)"
        )
    return path


@pytest.mark.parametrize(
    "argv",
    [
        ["promtool", "check", "config", "prometheus.yml"],
        ["promtool", "check", "rules", "alerts.yml"],
        ["promtool", "test", "rules", "alerts_test.yml"],
        ["amtool", "check-config", "alertmanager.yml"],
    ],
    ids=["check-config", "check-rules", "test-rules", "amtool-check-config"],
)
def test_prometheus_tooling_accepts_files(argv: list[str]) -> None:
    binary = _tool(argv[0])
    proc = subprocess.run([binary, *argv[1:]], cwd=PROM_DIR, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, f"`{' '.join(argv)}` failed:\n{proc.stdout}\n{proc.stderr}"


@pytest.mark.parametrize(
    ("labels", "receiver"),
    [
        (["alertname=ExamJobsStalled", "severity=critical", "service=exams"], "pager"),
        (["alertname=ExamAISlow", "severity=warning", "service=exams"], "team"),
    ],
)
def test_alertmanager_routes_by_severity(labels: list[str], receiver: str) -> None:
    binary = _tool("amtool")
    proc = subprocess.run(
        [binary, "config", "routes", "test", "--config.file=alertmanager.yml", *labels],
        cwd=PROM_DIR,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [receiver]


def _rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load((PROM_DIR / "alerts.yml").read_text(encoding="utf-8"))
    groups = doc["groups"]
    assert [g["name"] for g in groups] == ["exams"]
    rules: list[dict[str, Any]] = groups[0]["rules"]
    return rules


def test_alert_names_are_specs_and_the_documented_extras() -> None:
    assert {rule["alert"] for rule in _rules()} == SPEC_ALERTS | EXTRA_ALERTS


def test_every_alert_is_routable_and_explained() -> None:
    for rule in _rules():
        name = rule["alert"]
        assert rule["labels"]["severity"] in {"critical", "warning"}, name
        assert rule["labels"]["service"] == "exams", name
        annotations = rule["annotations"]
        for key in ("summary", "description", "runbook_url"):
            assert annotations.get(key, "").strip(), f"{name} lacks annotation {key}"
        # A full URL under the one base, so the install step's substitution reaches every link.
        assert annotations["runbook_url"] == f"{RUNBOOK_BASE}/monitoring.md#{name.lower()}", name


def test_the_runbook_base_is_written_once_per_rule_and_named_in_the_header() -> None:
    text = (PROM_DIR / "alerts.yml").read_text(encoding="utf-8")
    urls = re.findall(r"^\s+runbook_url: (\S+)$", text, flags=re.MULTILINE)
    assert len(urls) == len(_rules())
    assert {url.rsplit("/", 1)[0] for url in urls} == {RUNBOOK_BASE}
    # Every occurrence of the base is a runbook_url or the header's install note (sed replaces all).
    assert text.count(RUNBOOK_BASE) == len(urls) + 2
    # The install step in the docs replaces exactly this base.
    assert f"sed 's#{RUNBOOK_BASE}#" in MONITORING_DOC.read_text(encoding="utf-8")


def test_stuck_pending_pages_only_after_the_automatic_resend() -> None:
    from jobs.services import PENDING_RESEND_AFTER
    from server.app import RECONCILE_SECONDS

    rule = next(r for r in _rules() if r["alert"] == "ExamJobsStuckPending")
    match = re.fullmatch(r"max\(exams_jobs_oldest_pending_seconds\) > (\d+)", rule["expr"].strip())
    assert match, rule["expr"]
    # The scheduler re-sends a pending job PENDING_RESEND_AFTER after it was sent, in its next
    # pass; the alert must give that re-sent message time to be picked up before paging.
    assert int(match.group(1)) >= PENDING_RESEND_AFTER + RECONCILE_SECONDS + 30


def test_alert_expressions_use_only_spec_metrics() -> None:
    used: set[str] = set()
    for rule in _rules():
        expr = rule["expr"]
        metrics = set(re.findall(r"\bexams_[a-z_]+", expr))
        assert metrics <= ALLOWED_METRICS, f"{rule['alert']} uses unknown metrics {metrics - ALLOWED_METRICS}"
        # Other than SPEC's names, only `up` for the web scrape job.
        bare = set(re.findall(r"\b([a-z_]+)\s*[{\[]", expr)) - metrics - {"by", "without", "on", "ignoring"}
        assert bare <= {"up"}, f"{rule['alert']} selects {bare}"
        used |= metrics
    assert "exams_workers" in used
    assert "exams_jobs_finished_total" in used


def test_rule_tests_cover_every_alert() -> None:
    doc = yaml.safe_load((PROM_DIR / "alerts_test.yml").read_text(encoding="utf-8"))
    fires: set[str] = set()
    quiet: set[str] = set()
    for case in doc["tests"]:
        for check in case.get("alert_rule_test", []):
            (fires if check.get("exp_alerts") else quiet).add(check["alertname"])
    assert fires == ALERTS
    assert quiet == ALERTS


def test_runbook_anchors_exist_in_monitoring_doc() -> None:
    assert MONITORING_DOC.is_file(), "docs/monitoring.md is missing"
    text = MONITORING_DOC.read_text(encoding="utf-8")
    # GitHub anchors: heading text lowercased, spaces to hyphens, punctuation dropped.
    anchors = {
        re.sub(r"[^a-z0-9 _-]", "", m.group(1).strip().lower()).replace(" ", "-")
        for m in re.finditer(r"^#{1,6}\s+(.+?)\s*$", text, flags=re.MULTILINE)
    }
    for name in ALERTS:
        assert name.lower() in anchors, f"docs/monitoring.md has no heading for {name}"
