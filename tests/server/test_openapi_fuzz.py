"""The OpenAPI document tells the truth: Schemathesis runs every phase (examples, coverage,
fuzzing, stateful through the document's links) against the app in process, with every check on.

Also checks, without a running app, what the document must say for clients to rely on it: each
route's problem responses, the typed status document, the submit's headers and links.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, get_args

import pytest
import schemathesis
from schemathesis.engine import Status, StopReason, events
from schemathesis.engine import from_schema as engine_for
from schemathesis.python import asgi

from support import SPEC_STEP_ORDER, STATUS_FIELDS, ExamsApp, app_settings, run_in_transaction, sqlite_url

PROBLEM = "application/problem+json"
SCHEMA_PATH = "/api/documentation/openapi.json"
#: Each generating phase's examples per operation: enough to reach every branch the schema
#: describes, few enough for the whole run to stay well under a minute.
MAX_EXAMPLES = 25
SEED = 20261201

#: The checks the issue names; every other built-in check is on too (``"enabled": True``).
REQUIRED_CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
    "negative_data_rejection",
    "use_after_free",
)


def _config(headers: dict[str, str]) -> schemathesis.Config:
    return schemathesis.Config.from_dict(
        {
            "seed": SEED,
            "headers": headers,
            "workers": 1,
            "generation": {"max-examples": MAX_EXAMPLES, "deterministic": True, "database": "none"},
            "phases": {"stateful": {"max-steps": 8}},
            "checks": {
                "enabled": True,
                # Schema-valid data may still break a rule no schema can state, answered 422 by
                # contract: an exam code that does not exist, a cursor this API did not make,
                # graded_before not after graded_after, a callback host not allowed. Anything
                # else (a 400 for well-formed data above all) still fails the check.
                "positive_data_acceptance": {
                    "expected-statuses": ["2xx", "3xx", "401", "403", "404", "409", "422", "429"]
                },
            },
        }
    )


#: Each access mode the API has: open (``API_AUTH=off``), and with tokens, as a client holding a
#: ``submit`` token (its own jobs only: the others' are 404) under a submit rate limit low enough
#: for the run to meet its 429s. Every answer of the guard must be documented too.
ACCESS_MODES = {
    "open": {"API_AUTH": "off"},
    "tokens": {
        "API_AUTH": "tokens",
        "SECRET_KEY": "fuzz-secret-key-0123456789abcdef",
        "SUBMIT_RATE_LIMIT": "20/minute",
    },
}


@pytest.fixture(params=sorted(ACCESS_MODES))
def fuzzed_app(
    request: pytest.FixtureRequest, make_app: Callable[..., ExamsApp]
) -> Iterator[tuple[Any, dict[str, str]]]:
    """``create_app`` on a migrated database with the sample catalog, run by Schemathesis' own
    ASGI client (lifespan included: the embedded worker runs the jobs it submits), and the
    headers its requests carry."""
    from access.tokens import create_token
    from server.app import create_app

    # Started and stopped at once: that stops whichever app of another test was running (one
    # embedded worker per process).
    prepared = make_app(AI_API_ENABLED="false", LOG_LEVEL="WARNING", **ACCESS_MODES[request.param])
    prepared.stop()
    headers = {}
    if request.param == "tokens":
        _, token = run_in_transaction(prepared.settings, lambda session: create_token(session, "fuzz", ("submit",)))
        headers["Authorization"] = f"Bearer {token}"
    app = create_app(prepared.settings)
    try:
        yield app, headers
    finally:
        asgi.shutdown_lifespans()


def _describe(failure: Any, code_sample: str) -> str:
    return f"[{failure.operation}] {failure.title}\n{failure.message}\n{code_sample}"


def test_schemathesis_finds_nothing_with_every_phase_and_check(fuzzed_app: tuple[Any, dict[str, str]]) -> None:
    app, headers = fuzzed_app
    schema = schemathesis.openapi.from_asgi(SCHEMA_PATH, app, config=_config(headers))
    enabled = {name for name in REQUIRED_CHECKS if schema.config.checks.get_by_name(name=name).enabled}
    assert enabled == set(REQUIRED_CHECKS)

    failures: dict[tuple[str, str | None, str], str] = {}
    errors: list[str] = []
    phases: dict[str, Status] = {}
    stateful_transitions = 0
    checked: set[str] = set()
    stopped: StopReason | None = None
    answered: set[int] = set()
    for event in engine_for(schema).execute():
        if isinstance(event, events.PhaseStarted) and isinstance(event.payload, events.StatefulPhasePayload):
            stateful_transitions = event.payload.transitions_selected
        elif isinstance(event, events.PhaseFinished):
            phases[event.phase.name.value] = event.status
        elif isinstance(event, events.ScenarioFinished):
            answered |= {i.response.status_code for i in event.recorder.interactions.values() if i.response}
            for nodes in event.recorder.checks.values():
                for node in nodes:
                    checked.add(node.name)
                    info = node.failure_info
                    if info is not None:
                        key = (node.name, info.failure.operation, info.failure.title)
                        failures.setdefault(key, _describe(info.failure, info.code_sample))
        elif isinstance(event, events.NonFatalError):
            errors.append(f"{event.label}: {event.info.title}: {event.info}")
        elif isinstance(event, events.FatalError):
            errors.append(repr(event.exception))
        elif isinstance(event, events.EngineFinished):
            errors.extend(repr(failure) for failure in event.failures)
            stopped = event.stop_reason

    assert not errors, "\n\n".join(errors)
    assert stopped == StopReason.COMPLETED
    assert not failures, "\n\n".join(failures.values())
    for phase in ("examples", "coverage", "fuzzing", "stateful"):
        assert phases.get(phase) == Status.SUCCESS, phases
    # The submit's links (status, events, cancel, result) at least, followed from real 202s.
    assert stateful_transitions >= 4
    assert checked >= set(REQUIRED_CHECKS) - {"use_after_free"}, checked  # no DELETE: nothing to use after
    # The run met the answers of its mode: jobs accepted, and with tokens the guard's own.
    assert {202, 404, 422} <= answered, answered
    if headers:
        assert {401, 429} <= answered, answered


# --- what the document says ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def document(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The OpenAPI document as served (the app is built, never started)."""
    from server.app import create_app

    settings = app_settings(sqlite_url(Path(tmp_path_factory.mktemp("openapi"))), "http://127.0.0.1:9/v1")
    return json.loads(json.dumps(create_app(settings).openapi_schema.to_schema()))


def _operations(document: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method in ("get", "post", "put", "patch", "delete"):
                yield f"{method.upper()} {path}", operation


def test_every_error_response_is_a_problem_document(document: dict[str, Any]) -> None:
    problem = {"$ref": "#/components/schemas/ProblemDocument"}
    seen = 0
    for where, operation in _operations(document):
        for code, response in operation["responses"].items():
            if int(code) < 400:
                continue
            assert list(response["content"]) == [PROBLEM], (where, code)
            schema = response["content"][PROBLEM]["schema"]
            if where != "GET /ready":
                assert schema == problem, (where, code)
            seen += 1
    assert seen >= 20
    fields = document["components"]["schemas"]["ProblemDocument"]
    assert set(fields["required"]) == {"type", "title", "status", "detail"}
    assert fields["properties"]["errors"]["oneOf"][0]["items"] == {"$ref": "#/components/schemas/ProblemError"}


@pytest.mark.parametrize(
    ("where", "codes"),
    [
        ("POST /api/exam-results/process", {"202", "400", "413", "422", "503"}),
        ("GET /api/exam-results/status/{job_id}", {"200", "404", "503"}),
        ("GET /api/exam-results/status/{job_id}/events", {"200", "404", "503"}),
        ("POST /api/exam-results/status/{job_id}/cancel", {"200", "404", "409", "503"}),
        ("GET /api/exam-results/{job_id}", {"200", "404", "503"}),
        ("GET /api/exam-results", {"200", "422", "503"}),
        ("GET /api/exams", {"200", "503"}),
        ("GET /api/exams/{code}", {"200", "404", "503"}),
        ("GET /api/exams/{code}/summary", {"200", "404", "503"}),
        ("GET /health", {"200"}),
        ("GET /ready", {"200", "503"}),
        ("GET /metrics", {"200"}),
    ],
)
def test_each_route_documents_what_it_answers(document: dict[str, Any], where: str, codes: set[str]) -> None:
    operation = dict(_operations(document))[where]
    assert set(operation["responses"]) >= codes
    # Litestar's automatic 400 (its own JSON error body) is never sent by this app.
    if where != "POST /api/exam-results/process":
        assert "400" not in operation["responses"], where


def test_media_types_other_than_json_are_documented(document: dict[str, Any]) -> None:
    operations = dict(_operations(document))

    def content(where: str) -> dict[str, Any]:
        return dict(operations[where]["responses"]["200"]["content"])

    assert set(content("GET /metrics")) == {"text/plain; version=0.0.4"}
    assert set(content("GET /api/exam-results")) == {"application/json", "text/csv"}
    assert content("GET /api/exam-results")["application/json"]["schema"] == {"$ref": "#/components/schemas/ResultPage"}
    event = content("GET /api/exam-results/status/{job_id}/events")["text/event-stream"]["schema"]
    assert event["properties"]["event"]["enum"] == ["progress", "completed", "failed", "cancelled"]
    assert event["properties"]["data"]["contentSchema"] == {"$ref": "#/components/schemas/StatusDocument"}


def test_submit_documents_its_headers_and_links(document: dict[str, Any]) -> None:
    accepted = dict(_operations(document))["POST /api/exam-results/process"]["responses"]["202"]
    assert accepted["headers"]["Location"]["required"] is True
    assert accepted["headers"]["Retry-After"]["required"] is True
    assert accepted["headers"]["Retry-After"]["schema"]["type"] == "integer"
    links = {link["operationId"]: link["parameters"] for link in accepted["links"].values()}
    assert links == {
        operation_id: {"job_id": "$response.body#/job_id"}
        for operation_id in ("GetExamResultStatus", "StreamExamResultStatus", "CancelExamJob", "GetExamResult")
    }
    operation_ids = {operation["operationId"] for _, operation in _operations(document)}
    assert set(links) <= operation_ids


def test_the_status_document_is_typed(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    status = schemas["StatusDocument"]
    assert set(status["required"]) == STATUS_FIELDS
    properties = status["properties"]
    assert properties["status"]["enum"] == ["pending", "processing", "completed", "failed", "cancelled"]
    assert properties["current_step"]["enum"] == [*SPEC_STEP_ORDER, "failed", "cancelled"]
    assert properties["result"]["oneOf"] == [{"$ref": "#/components/schemas/JobResult"}, {"type": "null"}]
    result = schemas["JobResult"]
    assert set(result["required"]) == {
        "score",
        "max_score",
        "percentage",
        "passed",
        "topics",
        "questions",
        "recommendations",
        "recommendations_source",
        "processed_at",
    }
    assert set(result["properties"]) == {*result["required"], "recommendations_note"}
    assert result["properties"]["recommendations_source"]["enum"] == ["ai", "rule_based", "rule_based_fallback"]
    assert schemas["ResultDocument"]["properties"]["result"] == {"$ref": "#/components/schemas/JobResult"}
    assert set(schemas["QuestionResult"]["required"]) == {"question_id", "correct", "awarded", "max"}


def test_the_error_code_enum_is_every_code_a_job_error_can_have(document: dict[str, Any]) -> None:
    from jobs.errors import ERROR_CODES
    from jobs.schemas import ErrorCode

    assert set(get_args(ErrorCode)) == set(ERROR_CODES)
    documented = document["components"]["schemas"]["StatusDocument"]["properties"]["error_code"]["enum"]
    assert set(documented) == {*ERROR_CODES, None}
