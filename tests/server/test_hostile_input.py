"""Hostile input, generated (Hypothesis) and sent to the app in process.

Numbers JSON cannot hold (NaN, Infinity, 1e400, integers of hundreds of digits), deep and huge
JSON, invalid UTF-8, control and bidi-override characters, thousands of answers and very long
strings, in the body, the ``Idempotency-Key``, the ``callback_url``, path and query parameters:
each is answered with a ``4xx`` problem document in the request's language (Arabic here), never a
``5xx``, and nothing is stored. What is accepted (a ``student_id`` with a bidi override and
``<script>``, an answer with markup) reaches the student page and the dashboard escaped.
"""

from __future__ import annotations

import contextlib
import json
import re
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from support import MATH_ANSWERS, SAMPLE_CATALOG, ExamsApp

PROCESS = "/api/exam-results/process"
PROBLEM = "application/problem+json"
ARABIC = re.compile("[\u0600-\u06ff]")
#: Shared by every property test: reproducible in CI (derandomize), no example database written,
#: no per-example deadline (the app shares two cores with the rest of the suite).
PROPERTIES = settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
BIDI = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f"
#: Markup that must never reach a page unescaped.
SCRIPT = '<script>alert("hostile")</script>'
IMAGE = '<img src=x onerror="alert(1)">'
MiB = 1024 * 1024
SAMPLE_CODES = frozenset(exam["code"] for exam in json.loads(SAMPLE_CATALOG.read_text()))


# --- what "rejected" means --------------------------------------------------------------------


def stored_rows(app: ExamsApp) -> tuple[int, int]:
    """Jobs and callback deliveries in the app's SQLite database (read beside the app)."""
    path = app.database_url.split(":///", 1)[1]
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as connection:
        jobs = connection.execute("SELECT count(*) FROM exam_processing_jobs").fetchone()[0]
        deliveries = connection.execute("SELECT count(*) FROM exam_callback_deliveries").fetchone()[0]
    return int(jobs), int(deliveries)


def assert_localised_problem(response: httpx.Response, statuses: set[int]) -> dict[str, Any]:
    """A problem document with one of ``statuses``, in Arabic (title, detail and each field's message)."""
    assert response.status_code in statuses, (response.status_code, response.text[:500])
    assert response.headers["content-type"].split(";")[0] == PROBLEM
    assert response.headers["content-language"] == "ar"
    doc: dict[str, Any] = response.json()
    assert doc["status"] == response.status_code
    assert doc["type"].startswith("/problems/")
    assert ARABIC.search(doc["title"]), doc
    assert ARABIC.search(doc["detail"]), doc
    for error in doc.get("errors", []):
        assert ARABIC.search(error["message"]), error
    return doc


def submit_raw(app: ExamsApp, body: bytes, **headers: str | bytes) -> httpx.Response:
    return app.http.post(
        PROCESS, content=body, headers={"Content-Type": "application/json", "Accept-Language": "ar", **headers}
    )


def submission(**fields: Any) -> dict[str, Any]:
    return {"exam_code": "MATH-101", "student_id": "s-1042", "answers": dict(MATH_ANSWERS), **fields}


def encoded(document: Any) -> bytes:
    return json.dumps(document, ensure_ascii=False).encode("utf-8", "surrogatepass")


# --- hostile bodies, each with the statuses it may get ----------------------------------------

Hostile = tuple[str, bytes, set[int]]

#: Text with what breaks naive handling: control characters, bidi overrides, markup, quotes.
hostile_text = st.text(
    alphabet=st.one_of(
        st.characters(codec="utf-8"),
        st.sampled_from([*BIDI, "\x00", "\x1b", "\x7f", "\u2028", "<", ">", '"', "'", "&", "\\"]),
    ),
    min_size=1,
    max_size=40,
)
#: Text that is certainly refused as an id: a control character somewhere in it.
control_text = st.tuples(hostile_text, st.sampled_from(["\x00", "\x01", "\x07", "\x1b", "\x1f"]), hostile_text).map(
    "".join
)


#: Byte sequences no UTF-8 text contains: stray continuation or invalid lead bytes, overlong
#: forms, an encoded surrogate, a truncated sequence, code points past U+10FFFF.
NOT_UTF8 = (b"\xff", b"\xfe", b"\x80", b"\xc0\xaf", b"\xed\xa0\x80", b"\xc3\x28", b"\xe2\x82", b"\xf5\x80\x80\x80")
#: ASCII around them (so that they stay invalid), without what would end the JSON string.
ascii_bytes = st.binary(max_size=8).map(lambda raw: bytes(b for b in raw if b < 0x80 and b not in b'"\\'))


@st.composite
def invalid_utf8(draw: st.DrawFn) -> Hostile:
    junk = draw(ascii_bytes) + draw(st.sampled_from(NOT_UTF8)) + draw(ascii_bytes)
    values = {b"exam_code": b"MATH-101", b"student_id": b"s-1", b"q5": b"photosynthesis"}
    values[draw(st.sampled_from(sorted(values)))] = junk
    body = b'{"exam_code": "%s", "student_id": "%s", "answers": {"q5": "%s"}}' % (
        values[b"exam_code"],
        values[b"student_id"],
        values[b"q5"],
    )
    return "invalid UTF-8", body, {400}


@st.composite
def impossible_numbers(draw: st.DrawFn) -> Hostile:
    token = draw(
        st.one_of(
            st.sampled_from(["NaN", "-NaN", "Infinity", "-Infinity", "inf", "1e400", "-1e999", "0x10", "+1", "01"]),
            st.integers(min_value=309, max_value=100_000).map(lambda e: f"1e{e}"),
        )
    )
    question = draw(st.sampled_from(["q1", "q3", "q4"]))
    body = '{"exam_code": "MATH-101", "student_id": "s-1", "answers": {"%s": %s}}' % (question, token)  # noqa: UP031
    return f"number {token[:20]}", body.encode(), {400}


@st.composite
def huge_integers(draw: st.DrawFn) -> Hostile:
    digits = draw(st.integers(min_value=20, max_value=5000))
    sign = draw(st.sampled_from(["", "-"]))
    question = draw(st.sampled_from(["q1", "q2", "q3", "q4", "q5"]))
    body = '{"exam_code": "MATH-101", "student_id": "s-1", "answers": {"%s": %s%s}}' % (  # noqa: UP031
        question,
        sign,
        "9" * digits,
    )
    # Beyond 4300 digits the number itself cannot be read (400); below, it is no answer to any question.
    return f"integer of {digits} digits for {question}", body.encode(), {400, 422}


@st.composite
def deep_json(draw: st.DrawFn) -> Hostile:
    depth = draw(st.integers(min_value=300, max_value=200_000))
    opening, closing = draw(st.sampled_from([("[", "]"), ('{"a":', "}")]))
    nested = opening * depth + "1" + closing * depth
    where = draw(st.sampled_from(["body", "answer"]))
    if where == "body":
        return f"body nested {depth} deep", nested.encode(), {400, 413, 422}
    body = '{"exam_code": "MATH-101", "student_id": "s-1", "answers": {"q2": %s}}' % nested  # noqa: UP031
    return f"answer nested {depth} deep", body.encode(), {400, 413, 422}


@st.composite
def huge_json(draw: st.DrawFn) -> Hostile:
    size = draw(st.integers(min_value=MiB + 1, max_value=4 * MiB))
    field = draw(st.sampled_from(["student_id", "exam_code", "q5"]))
    padding = "x" * size
    document = submission(answers={"q5": padding}) if field == "q5" else submission(**{field: padding})
    return f"{size} bytes in {field}", encoded(document), {413}


@st.composite
def many_answers(draw: st.DrawFn) -> Hostile:
    count = draw(st.integers(min_value=1_000, max_value=40_000))
    answers = {f"q{index}": "a" for index in range(count)}
    return f"{count} answers", encoded(submission(answers=answers)), {413, 422}


@st.composite
def long_strings(draw: st.DrawFn) -> Hostile:
    length = draw(st.integers(min_value=2_049, max_value=500_000))
    field = draw(st.sampled_from(["student_id", "exam_code", "answer", "answer key", "multiple choice"]))
    text = draw(st.sampled_from(["x", "\u202e", "ش", "<"])) * length
    if field == "answer":
        document = submission(answers={**MATH_ANSWERS, "q5": text})
    elif field == "answer key":
        document = submission(answers={text: "a"})
    elif field == "multiple choice":
        document = submission(answers={**MATH_ANSWERS, "q2": [text]})
    else:
        document = submission(**{field: text})
    return f"{field} of {length} characters", encoded(document), {413, 422}


@st.composite
def control_characters(draw: st.DrawFn) -> Hostile:
    text = draw(control_text)
    field = draw(st.sampled_from(["student_id", "exam_code", "answer", "answer key"]))
    if field == "answer":
        document = submission(answers={**MATH_ANSWERS, "q5": text})
    elif field == "answer key":
        document = submission(answers={**MATH_ANSWERS, text: "a"})
    else:
        document = submission(**{field: text})
    return f"control character in {field}: {text!r}", encoded(document), {400, 422}


FIELDS = ("exam_code", "student_id", "answers", "callback_url")
#: JSON values that are neither an object nor a string.
other_json = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.lists(hostile_text))


@st.composite
def wrong_shapes(draw: st.DrawFn) -> Hostile:
    field = draw(st.sampled_from([*FIELDS, "whole body", "unknown field"]))
    if field == "whole body":
        return "a body that is no object", encoded(draw(st.one_of(other_json, hostile_text))), {422}
    if field == "unknown field":
        name = draw(hostile_text.filter(lambda name: name not in FIELDS))
        return "an unknown field", encoded(submission(**{name: draw(other_json)})), {422}
    value = draw(other_json)
    if field == "callback_url" and value is None:  # null is the same as no callback_url
        value = []
    # With callbacks off (the default), any callback_url at all is refused.
    return f"{field} of the wrong shape", encoded(submission(**{field: value})), {422}


hostile_bodies = st.one_of(
    invalid_utf8(),
    impossible_numbers(),
    huge_integers(),
    deep_json(),
    huge_json(),
    many_answers(),
    long_strings(),
    control_characters(),
    wrong_shapes(),
)


@PROPERTIES
@given(case=hostile_bodies)
def test_a_hostile_submission_is_refused_in_the_requests_language(app_session: ExamsApp, case: Hostile) -> None:
    label, body, statuses = case
    before = stored_rows(app_session)

    response = submit_raw(app_session, body)

    assert_localised_problem(response, statuses)
    assert stored_rows(app_session) == before, label


def _no_line_breaks(text: str) -> str:
    return text.replace("\r", "").replace("\n", "")


hostile_keys = st.one_of(
    st.text(min_size=256, max_size=5_000).map(_no_line_breaks).filter(lambda key: len(key.strip()) > 255),
    st.tuples(
        st.text(max_size=20), st.sampled_from(["\x00", "\x01", "\x07", "\x1b", "\x7f", "\u202e"]), st.text(max_size=20)
    ).map(lambda parts: _no_line_breaks(f"key-{''.join(parts)}-end")),
)


@settings(PROPERTIES, max_examples=15)
@given(key=hostile_keys)
def test_a_hostile_idempotency_key_is_refused(app_session: ExamsApp, key: str) -> None:
    raw = key.encode("utf-8", "surrogatepass")
    before = stored_rows(app_session)

    response = submit_raw(app_session, encoded(submission()), **{"Idempotency-Key": raw})

    # Printable, at most 255 characters once read, else a 422 naming the header.
    doc = assert_localised_problem(response, {400, 422})
    if response.status_code == 422:
        assert [error["field"] for error in doc["errors"]] == ["Idempotency-Key"]
    assert stored_rows(app_session) == before


ALLOWED_HOST = "hooks.example.edu"


@st.composite
def hostile_callback_urls(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(["scheme", "userinfo", "suffix", "character", "length", "port", "host"]))
    path = quote(draw(hostile_text), safe="")
    if kind == "scheme":
        scheme = draw(st.sampled_from(["javascript", "file", "ftp", "data", "gopher", "ws", "HTTPX"]))
        return f"{scheme}://{ALLOWED_HOST}/{path}"
    if kind == "userinfo":
        return draw(st.sampled_from([f"https://{ALLOWED_HOST}@evil.example/", f"https://user:pw@{ALLOWED_HOST}/"]))
    if kind == "suffix":
        return f"https://{ALLOWED_HOST}.evil.example/{path}"
    if kind == "character":
        bad = draw(st.sampled_from([*BIDI, "\x00", "\x1f", " ", "\t", "\n", "\u2028", "\u3000"]))
        cut = draw(st.integers(min_value=8, max_value=len(ALLOWED_HOST) + 9))
        url = f"https://{ALLOWED_HOST}/hook"
        return url[:cut] + bad + url[cut:]
    if kind == "length":
        return f"https://{ALLOWED_HOST}/" + "a" * draw(st.integers(min_value=2_049, max_value=100_000))
    if kind == "port":
        return f"https://{ALLOWED_HOST}:{draw(st.integers(min_value=65_536, max_value=10**30))}/"
    return f"https://{draw(st.sampled_from(['127.0.0.1', 'localhost', '[::1]', '169.254.169.254', '0']))}/"


def test_a_hostile_callback_url_is_refused(make_app: Callable[..., ExamsApp]) -> None:
    app = make_app(CALLBACK_ALLOWED_HOSTS=ALLOWED_HOST)
    good = submit_raw(app, encoded(submission(callback_url=f"https://{ALLOWED_HOST}/hook")))
    assert good.status_code == 202, good.text
    _wait_final(app, good.json()["job_id"])  # its callback delivery is stored by then

    @PROPERTIES
    @given(url=hostile_callback_urls())
    def refused(url: str) -> None:
        before = stored_rows(app)
        doc = assert_localised_problem(submit_raw(app, encoded(submission(callback_url=url))), {422})
        assert [error["field"] for error in doc["errors"]] == ["callback_url"]
        assert stored_rows(app) == before

    refused()


# --- paths and queries ------------------------------------------------------------------------

#: Text a URL can carry (no lone surrogates: they have no UTF-8 form to percent-encode).
url_text = st.text(
    alphabet=st.one_of(
        st.characters(codec="utf-8"), st.sampled_from([*BIDI, "\x00", "\x1b", "<", ">", '"', "%", "/", "?", "#"])
    ),
    min_size=1,
    max_size=300,
)
LONG_TEXT = st.integers(min_value=1_000, max_value=20_000).map(lambda n: "9" * n)


@PROPERTIES
@given(
    where=st.sampled_from(
        [
            "/api/exam-results/status/{}",
            "/api/exam-results/status/{}/events",
            "/api/exam-results/{}",
            "/api/exams/{}",
            "/api/exams/{}/summary",
        ]
    ),
    # Not an exam's code, nor only dots (the client would resolve "/." and "/.." away).
    value=st.one_of(url_text, LONG_TEXT).filter(lambda v: v.strip(" .") and v not in SAMPLE_CODES),
)
def test_a_hostile_path_parameter_is_a_localised_404(app_session: ExamsApp, where: str, value: str) -> None:
    response = app_session.http.get(where.format(quote(value, safe="")), headers={"Accept-Language": "ar"})

    assert_localised_problem(response, {404})


QUERY_NAMES = ("student_id", "exam_code", "passed", "graded_after", "graded_before", "limit", "cursor", "format")
hostile_numbers = st.sampled_from(["NaN", "Infinity", "-1", "0", "1e309", "501", "1.5", " 1", "0x1f", "٣"])
hostile_times = st.sampled_from(
    [
        "0001-01-01T00:00:00+14:00",
        "9999-12-31T23:59:59-14:00",
        "9999-99-99",
        "2026-02-30T00:00:00",
        "2026-01-01T00:00:00+24:00",
        "-2026-01-01",
        "2026-01-01T25:00",
    ]
)


# Dates with no UTC time (they once reached the database and came back as a 500).
@example(query={"graded_after": "0001-01-01T00:00:00+14:00"})
@example(query={"graded_before": "9999-12-31T23:59:59-14:00", "format": "csv"})
@PROPERTIES
@given(
    query=st.dictionaries(
        st.sampled_from(QUERY_NAMES), st.one_of(url_text, LONG_TEXT, hostile_numbers, hostile_times), min_size=1
    )
)
def test_hostile_result_queries_get_results_or_a_localised_422(app_session: ExamsApp, query: dict[str, str]) -> None:
    response = app_session.http.get("/api/exam-results", params=query, headers={"Accept-Language": "ar"})

    if response.status_code == 200:
        assert response.headers["content-type"].split(";")[0] in ("application/json", "text/csv")
    else:
        doc = assert_localised_problem(response, {422})
        assert {error["field"] for error in doc["errors"]} <= set(QUERY_NAMES)


# --- what is accepted is escaped wherever it is shown -------------------------------------------

ACCEPTED_IDS = st.tuples(
    st.sampled_from([SCRIPT, IMAGE, f"\u202e{SCRIPT}", f"s-1\u202egnp.exe{IMAGE}", f'"><svg onload=alert(1)>{BIDI}']),
    st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cc", "Cs")), max_size=10),
).map("".join)

OPERATOR_PASSWORD = "operator-password-hostile-1"
LOGIN_TOKEN = re.compile(r'name="_login" value="([^"]+)"')


def _assert_escaped(html: str, payloads: list[str]) -> None:
    for payload in payloads:
        for markup in (SCRIPT, IMAGE, "<svg onload"):
            if markup in payload:
                assert markup not in html, markup


def _log_in(app: ExamsApp) -> None:
    page = app.http.get("/admin/login")
    token = LOGIN_TOKEN.search(page.text)
    assert token, page.text
    form = {"username": "ops", "password": OPERATOR_PASSWORD, "_login": token.group(1), "next": "/admin"}
    response = app.http.post("/admin/login", data=form, follow_redirects=False)
    assert response.status_code == 303, response.text


def _wait_final(app: ExamsApp, job_id: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if app.status(job_id)["status"] in ("completed", "failed"):
            return
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} not final")


def test_accepted_hostile_text_is_escaped_on_the_dashboard_and_the_student_page(
    make_app: Callable[..., ExamsApp], tmp_path: Path
) -> None:
    app = make_app(
        AI_API_ENABLED="false",
        ADMIN_USERNAME="ops",
        ADMIN_PASSWORD=OPERATOR_PASSWORD,
        SECRET_KEY="test-secret-key-hostile-0123456789",
    )
    _log_in(app)
    submitted: list[str] = []

    @settings(PROPERTIES, max_examples=8)
    @given(student_id=ACCEPTED_IDS, answer=ACCEPTED_IDS)
    def escaped(student_id: str, answer: str) -> None:
        response = submit_raw(app, encoded(submission(student_id=student_id, answers={**MATH_ANSWERS, "q5": answer})))
        assert response.status_code == 202, response.text
        job_id = response.json()["job_id"]
        assert response.json()["student_id"] == student_id.strip()  # the API answers JSON, as sent
        submitted.append(job_id)
        _wait_final(app, job_id)
        payloads = [student_id, answer]
        for path, params in (
            ("/admin/jobs", {"student": student_id.strip()}),
            ("/admin/jobs", {}),
            (f"/admin/jobs/{job_id}", {}),
            ("/admin", {}),
            ("/", {"exam": student_id, "job": answer, "lang": student_id}),
        ):
            page = app.http.get(path, params=params)
            assert page.status_code == 200, (path, page.status_code)
            assert page.headers["content-type"].startswith("text/html")
            _assert_escaped(page.text, payloads)

    escaped()
    # The values were shown (escaped), not left out.
    listing = app.http.get("/admin/jobs").text
    assert "&lt;script&gt;" in listing or "&lt;img" in listing or "&lt;svg" in listing


@example(query={"from": "0001-01-01T00:00:00+14:00"})
@example(query={"to": "9999-12-31T23:59:59-14:00"})
@settings(PROPERTIES, max_examples=20)
@given(
    query=st.dictionaries(
        st.sampled_from(["status", "exam", "student", "step", "range", "from", "to", "error", "stalled", "page"]),
        st.one_of(url_text, hostile_times, st.sampled_from([SCRIPT, IMAGE])),
        min_size=1,
    )
)
def test_hostile_dashboard_filters_never_break_the_page(admin_app_logged_in: ExamsApp, query: dict[str, str]) -> None:
    response = admin_app_logged_in.http.get("/admin/jobs", params=query)

    assert response.status_code in (200, 422), (response.status_code, response.text[:300])
    _assert_escaped(response.text, list(query.values()))


@pytest.fixture
def admin_app_logged_in(make_app: Callable[..., ExamsApp]) -> ExamsApp:
    app = make_app(
        ADMIN_USERNAME="ops", ADMIN_PASSWORD=OPERATOR_PASSWORD, SECRET_KEY="test-secret-key-hostile-0123456789"
    )
    _log_in(app)
    return app


def test_the_student_pages_script_never_parses_text_as_html() -> None:
    # The page shows API data (student id, answers, errors) only through its script: every node
    # is built with textContent or createTextNode, never from an HTML string.
    from server.app import STATIC_DIR

    script = (STATIC_DIR / "js" / "student.js").read_text()
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"):
        assert sink not in script, sink
