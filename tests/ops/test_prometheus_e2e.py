"""A real Prometheus (Debian's ``/usr/bin/prometheus``) scrapes a real app and fires ``ExamJobsFailed``.

Prometheus runs with a config generated from ``ops/prometheus/prometheus.yml`` (target rewritten
to the test app, 1 s scrape and rule intervals) and a copy of ``ops/prometheus/alerts.yml``
whose expressions are untouched. Alerts go to a real Alertmanager started with
``ops/prometheus/alertmanager.yml``. Missing binaries fail the test: run ``make system-deps``.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from test_grafana import check_dashboard_queries

from support import ExamsServer, FakeAIProcess, free_port

ROOT = Path(__file__).resolve().parents[2]
PROM_DIR = ROOT / "ops" / "prometheus"
PROMETHEUS = Path("/usr/bin/prometheus")
ALERTMANAGER = Path("/usr/bin/prometheus-alertmanager")
#: Alerts this test waits for: their ``for:`` is set to 0s in the test's copy of the rules.
WAITED_ALERTS = {"ExamJobsFailed"}


def _require(binary: Path) -> str:
    if not binary.is_file():
        pytest.fail(f"{binary} is missing: run make system-deps (Debian packages prometheus, prometheus-alertmanager)")
    return str(binary)


def _get_json(url: str, **params: str) -> Any:
    response = httpx.get(url, params=params, timeout=5)
    response.raise_for_status()
    return response.json()


def wait_until(what: str, check: Callable[[], Any], timeout: float, log: Callable[[], str]) -> Any:
    """Poll ``check`` until it returns something truthy (HTTP errors count as not yet)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except httpx.HTTPError as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(0.5)
    raise AssertionError(f"{what} not seen within {timeout} s (last: {last!r})\n--- log ---\n{log()[-4000:]}")


def write_rules(target: Path) -> None:
    """Copy alerts.yml; only ``for:`` of the waited-for alerts changes, expressions stay identical."""
    original = yaml.safe_load((PROM_DIR / "alerts.yml").read_text(encoding="utf-8"))
    copy = yaml.safe_load((PROM_DIR / "alerts.yml").read_text(encoding="utf-8"))
    for rule in copy["groups"][0]["rules"]:
        if rule["alert"] in WAITED_ALERTS:
            rule["for"] = "0s"
    target.write_text(yaml.safe_dump(copy, sort_keys=False), encoding="utf-8")
    reread = yaml.safe_load(target.read_text(encoding="utf-8"))
    assert [r["expr"] for r in reread["groups"][0]["rules"]] == [r["expr"] for r in original["groups"][0]["rules"]]


def write_config(target: Path, app_port: int, alertmanager_port: int) -> None:
    """ops/prometheus/prometheus.yml, pointed at the test app and Alertmanager, 1 s intervals."""
    config = yaml.safe_load((PROM_DIR / "prometheus.yml").read_text(encoding="utf-8"))
    config["global"].update(scrape_interval="1s", evaluation_interval="1s", scrape_timeout="1s")
    assert config["rule_files"] == ["alerts.yml"], config["rule_files"]
    config["alerting"]["alertmanagers"][0]["static_configs"] = [{"targets": [f"127.0.0.1:{alertmanager_port}"]}]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    jobs["exams-web"]["static_configs"] = [{"targets": [f"127.0.0.1:{app_port}"]}]
    target.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")


class Daemon:
    """A Prometheus or Alertmanager process with its log file, killed at the end."""

    def __init__(self, argv: list[str], log_path: Path, cwd: Path) -> None:
        self.log_path = log_path
        with log_path.open("wb") as log:
            self.proc = subprocess.Popen(argv, cwd=cwd, stdout=log, stderr=subprocess.STDOUT)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@pytest.fixture
def prometheus_stack(
    make_server: Callable[..., ExamsServer], tmp_path: Path
) -> Iterator[tuple[ExamsServer, str, str, Callable[[], str]]]:
    """The app (no retries), Alertmanager and Prometheus; yields the app and both base URLs."""
    prometheus, alertmanager = _require(PROMETHEUS), _require(ALERTMANAGER)
    server = make_server(start=False, JOB_MAX_RETRIES="0")
    server.env.pop("PROMETHEUS_MULTIPROC_DIR", None)  # a plain single-process `exams serve`
    server.start()
    work = tmp_path / "prom"
    work.mkdir()
    am_port, prom_port = free_port(), free_port()
    write_rules(work / "alerts.yml")
    write_config(work / "prometheus.yml", server.port, am_port)
    daemons: list[Daemon] = []
    try:
        daemons.append(
            Daemon(
                [
                    alertmanager,
                    f"--config.file={PROM_DIR / 'alertmanager.yml'}",
                    f"--storage.path={work / 'alertmanager'}",
                    f"--web.listen-address=127.0.0.1:{am_port}",
                    "--cluster.listen-address=",
                ],
                work / "alertmanager.log",
                work,
            )
        )
        daemons.append(
            Daemon(
                [
                    prometheus,
                    f"--config.file={work / 'prometheus.yml'}",
                    f"--storage.tsdb.path={work / 'data'}",
                    f"--web.listen-address=127.0.0.1:{prom_port}",
                ],
                work / "prometheus.log",
                work,
            )
        )

        def logs() -> str:
            return "\n".join(f"--- {d.log_path.name} ---\n{d.log()[-2500:]}" for d in daemons)

        yield server, f"http://127.0.0.1:{prom_port}", f"http://127.0.0.1:{am_port}", logs
    finally:
        for daemon in reversed(daemons):
            daemon.stop()


def test_prometheus_scrapes_the_app_and_fires_exam_jobs_failed(
    prometheus_stack: tuple[ExamsServer, str, str, Callable[[], str]], fake_ai_http: FakeAIProcess
) -> None:
    server, prom, am, logs = prometheus_stack

    def web_target() -> dict[str, Any] | None:
        targets = _get_json(f"{prom}/api/v1/targets", state="active")["data"]["activeTargets"]
        for target in targets:
            if target["labels"].get("job") == "exams-web" and target["health"] == "up":
                return dict(target)
        return None

    target = wait_until("exams-web target up", web_target, 30, logs)
    assert target["scrapeUrl"] == f"http://127.0.0.1:{server.port}/metrics"
    assert target["labels"]["instance"] == f"127.0.0.1:{server.port}"

    # The failed-jobs counter has been scraped at 0 a few times (rules run every second too).
    def baseline_scraped() -> bool:
        query = 'count_over_time(exams_jobs_finished_total{status="failed"}[1m]) >= 3'
        return bool(_get_json(f"{prom}/api/v1/query", query=query)["data"]["result"])

    wait_until("three scrapes of the failed-jobs counter", baseline_scraped, 30, logs)
    time.sleep(1.5)  # one more rule evaluation on that data
    assert _alert(prom, "ExamJobsFailed") is None, "ExamJobsFailed fires before any job failed"

    # No retries and an AI that always fails: every job ends `failed`.
    fake_ai_http.set_mode("error_500")
    for _ in range(2):
        response = server.submit()
        assert response.status_code == 202, response.text
        final, _ = server.wait_final(response.json()["job_id"], timeout=30)
        assert final["status"] == "failed", final

    firing = wait_until(
        "ExamJobsFailed firing",
        lambda: (a := _alert(prom, "ExamJobsFailed")) is not None and a["state"] == "firing" and a,
        60,
        logs,
    )
    assert firing["labels"]["severity"] == "warning"
    assert firing["labels"]["service"] == "exams"
    assert firing["annotations"]["runbook_url"] == (
        "https://git.example.org/exams/blob/main/docs/monitoring.md#examjobsfailed"
    )
    assert float(firing["value"]) > 0

    # Prometheus delivered it to Alertmanager, which routes warnings to the `team` receiver.
    def routed() -> dict[str, Any] | None:
        for alert in _get_json(f"{am}/api/v2/alerts"):
            if alert["labels"].get("alertname") == "ExamJobsFailed":
                return dict(alert)
        return None

    delivered = wait_until("ExamJobsFailed in Alertmanager", routed, 30, logs)
    assert [r["name"] for r in delivered["receivers"]] == ["team"]

    # The Grafana dashboard's queries all run on this Prometheus, its main panels showing data.
    check_dashboard_queries(prom)


def _alert(prom: str, name: str) -> dict[str, Any] | None:
    for alert in _get_json(f"{prom}/api/v1/alerts")["data"]["alerts"]:
        if alert["labels"].get("alertname") == name:
            return dict(alert)
    return None
