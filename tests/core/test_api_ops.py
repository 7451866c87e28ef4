"""HTTP feature tests of the operations endpoints: ``/health``, ``/ready``, ``/metrics``, API docs.

In process (``create_app`` behind the test client), except the one test that starts a real
``exams serve`` whose PostgreSQL is unreachable: the process starts anyway and ``/ready`` says
``503``. Submissions and status answer ``503`` too (in process).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from i18n import gettext
from support import ExamsApp, ExamsServer, FakeAIProcess, app_settings, base_env

#: A PostgreSQL URL nothing listens on.
UNREACHABLE_DB = "postgresql+asyncpg://postgres@127.0.0.1:1/none"
ARABIC = re.compile("[\u0600-\u06ff]")
DOCUMENTED_PATHS = {
    "/api/exam-results/process",
    "/api/exam-results/status/{job_id}",
    "/api/exam-results/status/{job_id}/events",
    "/api/exams",
    "/api/exams/{code}",
    "/health",
    "/ready",
}
#: SPEC.md's metrics table: name -> Prometheus type.
SPEC_METRICS = {
    "exams_jobs_submitted": "counter",
    "exams_jobs_finished": "counter",
    "exams_job_retries": "counter",
    "exams_job_duration_seconds": "histogram",
    "exams_job_stage_duration_seconds": "histogram",
    "exams_jobs": "gauge",
    "exams_jobs_oldest_pending_seconds": "gauge",
    "exams_jobs_stalled": "gauge",
    "exams_ai_request_duration_seconds": "histogram",
    "exams_ai_requests": "counter",
    "exams_queue_messages": "gauge",
    "exams_workers": "gauge",
}


def get(server: ExamsApp, path: str, **kwargs: Any) -> httpx.Response:
    return server.http.get(path, **kwargs)


def submitted_total(server: ExamsApp) -> float:
    for family in text_string_to_metric_families(get(server, "/metrics").text):
        if family.name == "exams_jobs_submitted":
            return sum(s.value for s in family.samples if s.name == "exams_jobs_submitted_total")
    raise AssertionError("exams_jobs_submitted_total is missing from /metrics")


class _AssetRefs(HTMLParser):
    """Collects ``src`` and ``href`` of script, link and img tags."""

    def __init__(self) -> None:
        super().__init__()
        self.refs: list[tuple[str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("src", "href") and value and tag in ("script", "link", "img"):
                self.refs.append((tag, value))


@pytest.fixture
def db_down_server(tmp_path: Path, fake_ai_http: FakeAIProcess) -> Iterator[ExamsServer]:
    """``exams serve`` whose PostgreSQL cannot be reached (so no migrate/catalog load beforehand)."""
    server = ExamsServer(base_env(UNREACHABLE_DB, fake_ai_http.base_url), tmp_path / "db-down.log")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def db_down_app(fake_ai_http: FakeAIProcess) -> Iterator[ExamsApp]:
    """The app in process on a PostgreSQL that cannot be reached (no migrate/catalog load beforehand)."""
    app = ExamsApp(app_settings(UNREACHABLE_DB, fake_ai_http.base_url)).start()
    yield app
    app.stop()


def test_health_is_200(app_session: ExamsApp) -> None:
    response = get(app_session, "/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_ready_is_200_with_database_and_broker_ok(app_each_database: ExamsApp) -> None:
    response = get(app_each_database, "/ready")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["checks"] == {"database": "ok", "broker": "ok"}
    assert response.headers["cache-control"] == "no-store"


def test_metrics_is_prometheus_text_counting_submissions(app_session: ExamsApp) -> None:
    before = submitted_total(app_session)
    assert app_session.submit().status_code == 202

    response = get(app_session, "/metrics")

    assert response.status_code == 200
    assert response.headers["content-type"].split(";")[0] == "text/plain"
    assert "# TYPE exams_jobs_submitted_total counter" in response.text
    assert submitted_total(app_session) == before + 1


def test_metrics_content_type_is_well_formed(app_session: ExamsApp) -> None:
    response = get(app_session, "/metrics")
    media_type, *params = [part.strip() for part in response.headers["content-type"].split(";")]
    assert media_type == "text/plain"
    names = [param.split("=", 1)[0].lower() for param in params]
    # Prometheus 3 parses Content-Type strictly: a repeated parameter makes it invalid.
    assert len(names) == len(set(names)), response.headers["content-type"]
    assert "version" in names
    assert "charset=utf-8" in params


def test_rejected_submission_is_not_counted(app_session: ExamsApp) -> None:
    before = submitted_total(app_session)
    assert app_session.submit(exam_code="HIST-100").status_code == 422
    assert submitted_total(app_session) == before


def test_metrics_has_every_spec_metric_with_its_type(app_each_database: ExamsApp) -> None:
    # The job gauges are read from the database at scrape time: on both databases.
    families = {f.name: f for f in text_string_to_metric_families(get(app_each_database, "/metrics").text)}
    for name, kind in SPEC_METRICS.items():
        assert name in families, f"{name} missing from /metrics"
        assert families[name].type == kind, (name, families[name].type)


def test_swagger_ui_uses_only_local_assets_that_load(app_session: ExamsApp) -> None:
    response = get(app_session, "/api/documentation")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    html = response.text
    assert "SwaggerUIBundle" in html
    parser = _AssetRefs()
    parser.feed(html)
    assert parser.refs, "no assets referenced"
    kinds = {tag for tag, _ in parser.refs}
    assert {"script", "link"} <= kinds
    for tag, ref in parser.refs:
        parts = urlsplit(ref)
        assert not parts.scheme, f"{tag} loads {ref} from another host"
        assert not parts.netloc, f"{tag} loads {ref} from another host"
        asset = get(app_session, ref if ref.startswith("/") else f"/api/documentation/{ref}")
        assert asset.status_code == 200, ref
        assert asset.content, ref
    for match in re.finditer(r"""(?:src|href)\s*=\s*["']([^"']+)""", html):
        assert not re.match(r"(?i)(https?:)?//", match.group(1)), match.group(0)
    scripts = [ref for tag, ref in parser.refs if tag == "script"]
    assert any(ref.endswith("swagger-ui-bundle.js") for ref in scripts), scripts
    for ref in scripts:
        assert "javascript" in get(app_session, ref).headers["content-type"], ref
    styles = [ref for tag, ref in parser.refs if tag == "link" and ref.endswith(".css")]
    assert styles, parser.refs
    for ref in styles:
        assert get(app_session, ref).headers["content-type"].startswith("text/css"), ref


def test_openapi_schema_documents_every_public_path(app_session: ExamsApp) -> None:
    response = get(app_session, "/api/documentation/openapi.json")

    assert response.status_code == 200
    schema = json.loads(response.content)
    assert str(schema["openapi"]).startswith("3.")
    paths = schema["paths"]
    assert set(paths) >= DOCUMENTED_PATHS, sorted(DOCUMENTED_PATHS - set(paths))
    operation_ids: list[str] = []
    for path in DOCUMENTED_PATHS:
        operations = {m: op for m, op in paths[path].items() if m in ("get", "post", "put", "patch", "delete")}
        assert operations, path
        for method, operation in operations.items():
            where = f"{method.upper()} {path}"
            assert operation.get("operationId"), where
            text = (operation.get("summary") or "") + (operation.get("description") or "")
            assert text.strip(), f"{where} has neither summary nor description"
            operation_ids.append(operation["operationId"])
    assert len(operation_ids) == len(set(operation_ids)), operation_ids


def test_openapi_schema_documents_the_submit_body(app_session: ExamsApp) -> None:
    schema = get(app_session, "/api/documentation/openapi.json").json()
    submit = schema["paths"]["/api/exam-results/process"]["post"]
    assert "requestBody" in submit, sorted(submit)
    body_schema = submit["requestBody"]["content"]["application/json"]["schema"]
    assert set(body_schema["required"]) == {"exam_code", "student_id", "answers"}


def test_ready_is_503_naming_the_database_when_it_is_unreachable(db_down_server: ExamsServer) -> None:
    # A real process: `exams serve` starts although its database cannot be reached (and says so).
    response = httpx.get(f"{db_down_server.base_url}/ready", timeout=30)

    assert response.status_code == 503, response.text
    assert response.headers["content-type"].split(";")[0] == "application/problem+json"
    doc = response.json()
    assert (doc["status"], doc["type"]) == (503, "/problems/not-ready")
    assert "database" in doc["detail"]
    assert "broker" not in doc["detail"]
    assert doc["checks"] == {"database": "down", "broker": "ok"}
    arabic = httpx.get(f"{db_down_server.base_url}/ready", params={"lang": "ar"}, timeout=30).json()
    assert arabic["type"] == doc["type"]
    assert gettext("ready.database", "ar") in arabic["detail"]
    assert ARABIC.search(arabic["title"])


def test_submit_is_503_problem_when_the_database_is_unreachable(db_down_app: ExamsApp) -> None:
    response = db_down_app.submit()

    assert response.status_code == 503, response.text
    assert response.headers["content-type"].split(";")[0] == "application/problem+json"
    doc = response.json()
    assert (doc["status"], doc["type"]) == (503, "/problems/service-unavailable")
    assert doc["detail"] == gettext("problem.unavailable.database", "en")
    assert "location" not in response.headers
    arabic = db_down_app.http.post(
        "/api/exam-results/process",
        json={"exam_code": "MATH-101", "student_id": "s-1042", "answers": {"q1": "b"}},
        headers={"Accept-Language": "ar"},
    )
    assert arabic.status_code == 503
    assert arabic.json()["type"] == doc["type"]
    assert arabic.json()["detail"] == gettext("problem.unavailable.database", "ar")
    assert get(db_down_app, "/health").status_code == 200


def test_status_is_503_not_404_when_the_database_is_unreachable(db_down_app: ExamsApp) -> None:
    response = get(db_down_app, "/api/exam-results/status/00000000-0000-0000-0000-000000000001")
    assert response.status_code == 503, response.text
    assert response.json()["type"] == "/problems/service-unavailable"


def test_cors_lets_a_configured_front_end_origin_submit_and_poll(make_app: Callable[..., ExamsApp]) -> None:
    server = make_app(CORS_ALLOW_ORIGINS="https://school.example")
    preflight = server.http.options(
        "/api/exam-results/process",
        headers={
            "Origin": "https://school.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type, idempotency-key",
        },
    )
    assert preflight.status_code in (200, 204), preflight.text
    assert preflight.headers["access-control-allow-origin"] == "https://school.example"
    response = server.submit(Origin="https://school.example")
    assert response.status_code == 202
    assert response.headers["access-control-allow-origin"] == "https://school.example"
    assert "location" in response.headers["access-control-expose-headers"].lower()
    other = server.submit(Origin="https://elsewhere.example")
    assert "access-control-allow-origin" not in other.headers


def test_no_cors_headers_unless_configured(app_session: ExamsApp) -> None:
    response = app_session.http.get("/api/exams", headers={"Origin": "https://school.example"})
    assert "access-control-allow-origin" not in response.headers
