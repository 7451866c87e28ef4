"""``POST /api/exam-results/process`` in process: the typed body's OpenAPI schema and the exact
problem documents of every bad body (English and Arabic), idempotency and the size limit.

These are the outside contract of the submit endpoint: status, ``type``, ``title``, ``detail``
and the ordered ``errors`` must stay exactly as they are.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient

from core.db import Database
from core.settings import Settings, load_settings
from exams.catalog import SAMPLE_CATALOG_PATH, load_catalog_file
from exams.services import ExamService
from i18n import gettext
from server.app import create_app
from server.migrate import run_migrations
from support import STATUS_FIELDS

PROCESS = "/api/exam-results/process"
PROBLEM = "application/problem+json"
MIB = 1024 * 1024
ANSWERS: dict[str, Any] = {"q1": "b", "q2": ["a", "c"], "q3": 3.14, "q4": True, "q5": "photosynthesis"}

Error = tuple[str, str, dict[str, Any]]


async def _load_catalog(settings: Settings) -> None:
    database = Database.from_settings(settings)
    try:
        async with database.transaction() as session:
            await ExamService(session=session).load(load_catalog_file(SAMPLE_CATALOG_PATH))
    finally:
        await database.dispose()


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient[Any]]:
    tmp: Path = tmp_path_factory.mktemp("submit-body")
    settings = load_settings(
        {"DATABASE_URL": f"sqlite+aiosqlite:///{tmp}/t.db", "AI_API_ENABLED": "false"},
        env_file=tmp / "no.env",
    )
    run_migrations(settings)
    asyncio.run(_load_catalog(settings))
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def submission(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"exam_code": "MATH-101", "student_id": "s-1042", "answers": dict(ANSWERS)}
    body.update(overrides)
    return body


def post(
    client: TestClient[Any],
    content: bytes | str,
    locale: str | None = None,
    headers: dict[str, str] | None = None,
    *,
    by_query: bool = False,
) -> Any:
    all_headers = {"Content-Type": "application/json", **(headers or {})}
    params = {}
    if locale and by_query:
        params["lang"] = locale
    elif locale:
        all_headers["Accept-Language"] = locale
    raw = content.encode() if isinstance(content, str) else content
    return client.post(PROCESS, content=raw, headers=all_headers, params=params)


def validation_problem(errors: list[Error], locale: str) -> dict[str, Any]:
    return {
        "type": "/problems/validation-error",
        "title": gettext("problem.validation.title", locale),
        "status": 422,
        "detail": gettext("problem.validation.detail", locale, count=len(errors)),
        "instance": PROCESS,
        "errors": [{"field": field, "message": gettext(key, locale, **params)} for field, key, params in errors],
    }


def malformed_problem(locale: str) -> dict[str, Any]:
    return {
        "type": "/problems/malformed-json",
        "title": gettext("problem.malformed_json.title", locale),
        "status": 400,
        "detail": gettext("problem.malformed_json.detail", locale),
        "instance": PROCESS,
    }


def assert_exact(response: Any, expected: dict[str, Any], locale: str) -> None:
    assert response.status_code == expected["status"], response.text
    assert response.headers["content-type"].split(";")[0] == PROBLEM
    assert response.headers["content-language"] == locale
    assert response.json() == expected


# --- OpenAPI -------------------------------------------------------------------------------


def test_openapi_request_body_is_derived_from_the_submit_request_type(client: TestClient[Any]) -> None:
    document = client.get("/api/documentation/openapi.json").json()
    operation = document["paths"][PROCESS]["post"]
    body = operation["requestBody"]
    assert body["required"] is True
    schema = body["content"]["application/json"]["schema"]

    assert schema["type"] == "object"
    assert set(schema["required"]) == {"exam_code", "student_id", "answers"}
    properties = schema["properties"]
    assert set(properties) == {"exam_code", "student_id", "answers", "callback_url"}
    assert (properties["exam_code"]["type"], properties["exam_code"]["maxLength"]) == ("string", 64)
    assert (properties["student_id"]["type"], properties["student_id"]["maxLength"]) == ("string", 128)
    assert properties["exam_code"]["description"]
    assert properties["student_id"]["description"]
    answers = properties["answers"]
    assert answers["type"] == "object"
    assert answers["description"]
    value_types = answers["additionalProperties"]["oneOf"]
    assert {"type": "string"} in value_types
    assert {"type": "array", "items": {"type": "string"}} in value_types
    assert {"type": "number"} in value_types
    assert {"type": "boolean"} in value_types
    assert len(value_types) == 4
    examples = schema["examples"]
    assert examples
    assert examples[0]["exam_code"] == "MATH-101"
    assert set(examples[0]) == {"exam_code", "student_id", "answers"}

    accepted = operation["responses"]["202"]["content"]["application/json"]["schema"]
    assert accepted == {"$ref": "#/components/schemas/StatusDocument"}
    status_document = document["components"]["schemas"]["StatusDocument"]
    assert set(status_document["properties"]) == STATUS_FIELDS
    header = next(p for p in operation["parameters"] if p["name"] == "Idempotency-Key")
    assert (header["in"], header["required"]) == ("header", False)


# --- bad bodies: exact problem documents ---------------------------------------------------

MALFORMED: dict[str, bytes] = {
    "truncated": b'{"exam_code": "MATH-101",',
    "not json": b"not json",
    "empty": b"",
    "trailing": b'{"a": 1} trailing',
    "not utf-8": b"\xff\xfe",
    "nested 5000 deep in answers": (
        b'{"exam_code": "MATH-101", "student_id": "s", "answers": {"q1": ' + b"[" * 5000 + b"]" * 5000 + b"}}"
    ),
    "nested 200000 deep document": b"[" * 200_000 + b"]" * 200_000,
}


@pytest.mark.parametrize("locale", ["en", "ar"])
@pytest.mark.parametrize("name", list(MALFORMED))
def test_malformed_json_is_exactly_the_malformed_json_problem(client: TestClient[Any], name: str, locale: str) -> None:
    assert_exact(post(client, MALFORMED[name], locale), malformed_problem(locale), locale)


UNKNOWN_12 = {f"x{n:02d}": n for n in range(12)}
LONG_UNKNOWN = "u" * 100

BAD_SHAPES: dict[str, tuple[Any, list[Error]]] = {
    "array": ([], [("body", "validation.not_object", {})]),
    "array of a submission": ([submission()], [("body", "validation.not_object", {})]),
    "string": ("MATH-101", [("body", "validation.not_object", {})]),
    "number": (42, [("body", "validation.not_object", {})]),
    "null": (None, [("body", "validation.not_object", {})]),
    "boolean": (True, [("body", "validation.not_object", {})]),
    "empty object": (
        {},
        [
            ("exam_code", "validation.required", {}),
            ("student_id", "validation.required", {}),
            ("answers", "validation.required", {}),
        ],
    ),
    "missing exam_code": (
        {"student_id": "s", "answers": {}},
        [("exam_code", "validation.required", {})],
    ),
    "null student_id": (submission(student_id=None), [("student_id", "validation.required", {})]),
    "blank exam_code": (submission(exam_code="   "), [("exam_code", "validation.required", {})]),
    "empty student_id": (submission(student_id=""), [("student_id", "validation.required", {})]),
    "exam_code not a string": (submission(exam_code=101), [("exam_code", "validation.not_string", {})]),
    "student_id a list": (submission(student_id=["s"]), [("student_id", "validation.not_string", {})]),
    "exam_code too long": (submission(exam_code="A" * 65), [("exam_code", "validation.too_long", {"max": 64})]),
    "student_id too long": (
        submission(student_id="s" * 129),
        [("student_id", "validation.too_long", {"max": 128})],
    ),
    "NUL in exam_code": (
        submission(exam_code="MATH-101\x00"),
        [("exam_code", "validation.invalid_characters", {})],
    ),
    "control character in student_id": (
        submission(student_id="s-1042\x07"),
        [("student_id", "validation.invalid_characters", {})],
    ),
    "null answers": (submission(answers=None), [("answers", "validation.required", {})]),
    "answers a list": (submission(answers=["b", ["a", "c"]]), [("answers", "validation.not_object", {})]),
    "answers a string": (submission(answers="b"), [("answers", "validation.not_object", {})]),
    "NUL in an answer": (
        submission(answers={"q5": "photo\x00synthesis"}),
        [("answers", "validation.invalid_characters", {})],
    ),
    "NUL in a question id": (
        submission(answers={"q1\x00": "b"}),
        [("answers", "validation.invalid_characters", {})],
    ),
    "control character deep in an answer": (
        submission(answers={"q2": ["a", "c\x1b"]}),
        [("answers", "validation.invalid_characters", {})],
    ),
    "one unknown field": (submission(extra=1), [("extra", "validation.unknown_field", {})]),
    "twelve unknown fields: the first ten, sorted": (
        {**submission(), **dict(reversed(UNKNOWN_12.items()))},
        [(f"x{n:02d}", "validation.unknown_field", {}) for n in range(10)],
    ),
    "a long unknown field name is cut to 64": (
        submission(**{LONG_UNKNOWN: 1}),
        [("u" * 64, "validation.unknown_field", {})],
    ),
    "every problem at once": (
        {"exam_code": 1, "student_id": "", "answers": [], "zz": 1, "aa": 2},
        [
            ("exam_code", "validation.not_string", {}),
            ("student_id", "validation.required", {}),
            ("answers", "validation.not_object", {}),
            ("aa", "validation.unknown_field", {}),
            ("zz", "validation.unknown_field", {}),
        ],
    ),
    "too long, invalid characters and missing together": (
        {"exam_code": "A" * 65, "student_id": "s\x00", "extra": None},
        [
            ("exam_code", "validation.too_long", {"max": 64}),
            ("student_id", "validation.invalid_characters", {}),
            ("answers", "validation.required", {}),
            ("extra", "validation.unknown_field", {}),
        ],
    ),
    "field errors come before the answers' characters": (
        submission(answers={"q5": "\x00"}, student_id=7),
        [("student_id", "validation.not_string", {})],
    ),
    "unknown exam": (
        submission(exam_code="NOPE-999"),
        [("exam_code", "validation.exam_unknown", {"code": "NOPE-999"})],
    ),
    "closed exam": (
        submission(exam_code="HIST-100", answers={"q1": "a"}),
        [("exam_code", "validation.exam_closed", {"code": "HIST-100"})],
    ),
    "answers of the wrong types": (
        submission(answers={"q1": 1, "q3": None, "q4": "true"}),
        [
            ("answers.q1", "validation.answer_not_string", {}),
            ("answers.q3", "validation.answer_not_number", {}),
            ("answers.q4", "validation.answer_not_boolean", {}),
        ],
    ),
    "list answer with a number in it": (
        submission(answers={"q2": ["a", 3]}),
        [("answers.q2", "validation.answer_not_string_list", {})],
    ),
    "nested 100 deep in an answer": (
        submission(answers={"q1": json.loads("[" * 100 + "]" * 100)}),
        [("answers.q1", "validation.answer_not_string", {})],
    ),
    # Readable JSON, nested deeper than Python's recursion limit allows for a recursive check.
    "nested 600 deep in an answer": (
        submission(answers={"q1": json.loads("[" * 600 + "]" * 600)}),
        [("answers.q1", "validation.answer_not_string", {})],
    ),
}


@pytest.mark.parametrize("locale", ["en", "ar"])
@pytest.mark.parametrize("name", list(BAD_SHAPES))
def test_bad_shape_is_exactly_the_validation_problem(client: TestClient[Any], name: str, locale: str) -> None:
    body, errors = BAD_SHAPES[name]
    response = post(client, json.dumps(body), locale)
    assert_exact(response, validation_problem(errors, locale), locale)


def test_lang_query_asks_for_arabic_too(client: TestClient[Any]) -> None:
    errors: list[Error] = [
        ("exam_code", "validation.required", {}),
        ("student_id", "validation.required", {}),
        ("answers", "validation.required", {}),
    ]
    assert_exact(post(client, "{}", "ar", by_query=True), validation_problem(errors, "ar"), "ar")
    assert_exact(post(client, "{oops", "ar", by_query=True), malformed_problem("ar"), "ar")


def test_body_over_one_mebibyte_is_413(client: TestClient[Any]) -> None:
    body = json.dumps(submission(answers={"q5": "x" * (MIB + 10)}))
    for locale in ("en", "ar"):
        response = post(client, body, locale)
        assert_exact(
            response,
            {
                "type": "/problems/payload-too-large",
                "title": gettext("problem.too_large.title", locale),
                "status": 413,
                "detail": gettext("problem.too_large.detail", locale, max_bytes=MIB),
                "instance": PROCESS,
            },
            locale,
        )


def test_body_of_exactly_one_mebibyte_is_accepted(client: TestClient[Any]) -> None:
    body = json.dumps(submission()).encode()
    body += b" " * (MIB - len(body))
    assert len(body) == MIB
    response = post(client, body)
    assert response.status_code == 202, response.text


# --- accepted submissions and Idempotency-Key ----------------------------------------------


def test_valid_submission_is_202_with_the_status_document(client: TestClient[Any]) -> None:
    response = post(client, json.dumps(submission(student_id="  s-7  ")), "ar")
    assert response.status_code == 202, response.text
    doc = response.json()
    assert set(doc) == STATUS_FIELDS
    assert (doc["exam_code"], doc["student_id"], doc["status"]) == ("MATH-101", "s-7", "pending")
    assert doc["current_step_label"] == gettext("step.queued", "ar")
    assert response.headers["location"] == f"{PROCESS.rsplit('/', 1)[0]}/status/{doc['job_id']}"
    assert response.headers["retry-after"] == "2"
    assert response.headers["content-language"] == "ar"


def test_content_type_is_not_required_to_be_json(client: TestClient[Any]) -> None:
    response = post(client, json.dumps(submission()), headers={"Content-Type": "text/plain"})
    assert response.status_code == 202, response.text


def wait_final(client: TestClient[Any], status_url: str) -> None:
    """Until the job is done (so the in-process worker no longer writes to SQLite)."""
    deadline = time.monotonic() + 30
    while client.get(status_url).json()["status"] not in ("completed", "failed"):
        assert time.monotonic() < deadline, status_url
        time.sleep(0.1)


def test_same_key_same_body_is_the_same_job_and_other_body_is_422(client: TestClient[Any]) -> None:
    key = f"key-{uuid.uuid4()}"
    first = post(client, json.dumps(submission()), headers={"Idempotency-Key": key})
    second = post(client, json.dumps(submission()), headers={"Idempotency-Key": f'"{key}"'})
    assert first.status_code == second.status_code == 202, (first.text, second.text)
    assert first.json()["job_id"] == second.json()["job_id"]
    wait_final(client, first.headers["location"])

    other = post(client, json.dumps(submission(answers={"q1": "a"})), "ar", {"Idempotency-Key": key})
    assert_exact(
        other,
        {
            "type": "/problems/idempotency-key-reused",
            "title": gettext("problem.idempotency.title", "ar"),
            "status": 422,
            "detail": gettext("problem.idempotency.detail", "ar"),
            "instance": PROCESS,
        },
        "ar",
    )


KEY_ERROR: list[Error] = [("Idempotency-Key", "validation.idempotency_key", {"max": 255})]


@pytest.mark.parametrize("locale", ["en", "ar"])
@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param(json.dumps(submission()), KEY_ERROR, id="valid body"),
        pytest.param("{}", KEY_ERROR, id="bad shape: the key is checked first"),
        pytest.param("[1]", KEY_ERROR, id="not an object: the key is checked first"),
        pytest.param("{oops", None, id="malformed JSON wins over the key"),
        pytest.param("", None, id="empty body wins over the key"),
    ],
)
def test_unusable_idempotency_key(
    client: TestClient[Any], body: str, expected: list[Error] | None, locale: str
) -> None:
    for key in ("k" * 300, "bad\x7fkey"):
        response = post(client, body, locale, {"Idempotency-Key": key})
        wanted = malformed_problem(locale) if expected is None else validation_problem(expected, locale)
        assert_exact(response, wanted, locale)


def test_blank_idempotency_key_is_no_key(client: TestClient[Any]) -> None:
    first = post(client, json.dumps(submission()), headers={"Idempotency-Key": '""'})
    second = post(client, json.dumps(submission()), headers={"Idempotency-Key": "  "})
    assert first.status_code == second.status_code == 202
    assert first.json()["job_id"] != second.json()["job_id"]
