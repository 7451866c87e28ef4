"""The Grafana dashboard in ops/grafana: well-formed, provisioned, and every query is real PromQL over
metrics the app exports.

Each query is parsed by ``promtool check rules`` (as a recording rule of a generated rules file)
and its metric names are checked against a real ``/metrics`` scrape. ``test_prometheus_e2e`` also
runs every query on its real Prometheus scraping a real app (:func:`check_dashboard_queries`),
where the main panels must show data. Missing binaries fail the tests: run ``make system-deps``.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from support import ExamsApp

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "ops" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "exams.json"
#: The checkout path the provisioning file names (docs/deployment.md installs to /srv/exams).
CHECKOUT = "/srv/exams"
#: What the issue asks the dashboard to show, as the metric each needs.
REQUIRED_METRICS = {
    "exams_jobs": "jobs by status",
    "exams_jobs_submitted_total": "throughput",
    "exams_jobs_finished_total": "throughput and failure rate",
    "exams_job_stage_duration_seconds_bucket": "step latency",
    "exams_ai_request_duration_seconds_bucket": "AI latency",
    "exams_queue_messages": "queue depth",
    "exams_workers": "workers",
    "exams_scheduler_last_run_timestamp_seconds": "scheduler liveness",
}
#: Panels that must show data on a running app once jobs finished (title -> minimum series).
MAIN_PANELS = {
    "Waiting or running": 1,
    "Oldest pending": 1,
    "Jobs by status": 5,
    "Submitted and finished per minute": 4,
    "Failure rate (15 min)": 1,
    "Job duration, submission to result": 2,
    "p95 per pipeline step": 2,
    "AI latency": 2,
    "AI requests per minute by outcome": 4,
    "Queue depth": 3,
    "Live workers": 1,
    "Since the last scheduler pass": 1,
    "Database and broker": 2,
}
_FUNCTIONS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "le"}


def dashboard() -> dict[str, Any]:
    return dict(json.loads(DASHBOARD.read_text(encoding="utf-8")))


def panels() -> list[dict[str, Any]]:
    return [p for p in dashboard()["panels"] if p["type"] != "row"]


def queries() -> list[tuple[str, str, str]]:
    """(panel title, refId, expr) of every query."""
    return [(p["title"], t["refId"], t["expr"]) for p in panels() for t in p["targets"]]


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects (identifiers followed by a selector or range, or alone)."""
    without_strings = re.sub(r'"[^"]*"', '""', expr)
    without_labels = re.sub(r"\{[^}]*\}", "{}", without_strings)
    words = set(re.findall(r"\b([a-z_][a-z0-9_]*)\b(?!\s*\()", without_labels))
    grouped = set(re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", without_labels))
    labels = {label.strip() for group in grouped for label in group.split(",")}
    return {w for w in words - _FUNCTIONS - labels if w.startswith(("exams_", "dramatiq_"))}


def test_the_dashboard_is_well_formed() -> None:
    board = dashboard()
    assert board["uid"] == "exams-overview"
    assert board["title"]
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    cells: set[tuple[int, int]] = set()
    for panel in board["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] >= 0, panel["title"]
        assert 0 < pos["w"] <= 24 - pos["x"], panel["title"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps another panel"
                cells.add((x, y))
        if panel["type"] == "row":
            continue
        assert panel["type"] in {"stat", "timeseries"}, panel["title"]
        assert panel["description"], panel["title"]
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"]
            assert target["expr"].strip()


def test_the_dashboard_shows_what_on_call_needs() -> None:
    used = set().union(*(metric_names(expr) for _, _, expr in queries()))
    missing = {name: why for name, why in REQUIRED_METRICS.items() if name not in used}
    assert not missing, f"no panel for {missing}"
    titles = {p["title"] for p in panels()}
    assert set(MAIN_PANELS) <= titles


def test_promtool_parses_every_query(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is not installed: run `make system-deps` (Debian package prometheus)")
    rules = [
        {"record": f"dashboard:panel_{index}:{ref.lower()}", "expr": expr}
        for index, (_, ref, expr) in enumerate(queries())
    ]
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}), encoding="utf-8")
    proc = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"SUCCESS: {len(rules)} rules found" in proc.stdout


def test_every_metric_the_dashboard_reads_is_exported(app_session: ExamsApp) -> None:
    # One job through the app, so the HTTP and job histograms have series too.
    final, _ = app_session.wait_final(app_session.submitted(), timeout=60)
    assert final["status"] == "completed", final
    text = app_session.http.get("/metrics").text
    exported = set(re.findall(r"^([a-z_][a-z0-9_]*)(?:\{| )", text, flags=re.MULTILINE))
    for title, ref, expr in queries():
        unknown = metric_names(expr) - exported
        assert not unknown, f"panel {title!r} ({ref}) reads {unknown}, which /metrics does not export"


def test_provisioning_points_at_the_dashboard_and_a_prometheus() -> None:
    providers = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "exams.yml").read_text(encoding="utf-8"))
    assert providers["apiVersion"] == 1
    (provider,) = providers["providers"]
    assert provider["type"] == "file"
    path = provider["options"]["path"]
    assert path.startswith(f"{CHECKOUT}/"), path
    assert (ROOT / path.removeprefix(f"{CHECKOUT}/") / DASHBOARD.name).is_file()
    sources = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text(encoding="utf-8"))
    (source,) = sources["datasources"]
    assert source["type"] == "prometheus"
    assert source["url"].startswith("http")


def check_dashboard_queries(prom: str, timeout: float = 30) -> None:
    """Run every dashboard query on the Prometheus at ``prom`` (scraping an app whose jobs have
    finished): all must succeed, and the main panels must show data within ``timeout``."""

    def counts() -> dict[str, int]:
        found: dict[str, int] = {}
        for title, ref, expr in queries():
            answer = httpx.get(f"{prom}/api/v1/query", params={"query": expr}, timeout=5).json()
            assert answer["status"] == "success", (title, ref, answer)
            series = [s for s in answer["data"]["result"] if s["value"][1] not in {"NaN", "+Inf", "-Inf"}]
            found[title] = found.get(title, 0) + len(series)
        return found

    deadline = time.monotonic() + timeout
    while True:
        found = counts()
        short = {title: found.get(title, 0) for title, least in MAIN_PANELS.items() if found.get(title, 0) < least}
        if not short:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"dashboard panels without data: {short} (all: {found})")
        time.sleep(1)
