"""HTTP feature tests of ``GET /api/exam-results/status/{job_id}/events`` (server-sent events, SPEC.md), in process.

The stream is read through the test client and parsed into SSE frames: a ``progress`` event with
the current document first, ``progress`` per change, then ``completed`` or ``failed``, then the end.
The in-process client hands over a response once the app has sent all of it, so a stream that
does not close fails the test by its timeout.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from i18n import gettext
from support import SPEC_STEP_ORDER, ExamsApp, FakeAIProcess

STATUS = "/api/exam-results/status"
ARABIC = re.compile("[\u0600-\u06ff]")
SPEC_ORDER = list(SPEC_STEP_ORDER)
#: Seconds a test reading a stream may take: long enough for a job, short enough to notice a
#: stream that does not close.
STREAM_TIMEOUT = 60

pytestmark = pytest.mark.timeout(STREAM_TIMEOUT)


class Stream:
    """One SSE response: its headers and the parsed events, read until the server closed it."""

    def __init__(self, response: httpx.Response, events: list[dict[str, str]]) -> None:
        self.response = response
        self.events = events

    @property
    def names(self) -> list[str]:
        return [event["event"] for event in self.events]

    def documents(self) -> list[dict[str, Any]]:
        return [json.loads(event["data"]) for event in self.events]


def parse_sse(lines: Iterator[str]) -> Iterator[dict[str, str]]:
    """SSE frames as dicts (``event`` defaults to ``message``); frames without data are skipped."""
    fields: dict[str, str] = {}
    data: list[str] = []
    for line in lines:
        if line == "":
            if data:
                yield {"event": fields.get("event", "message"), "data": "\n".join(data), **fields}
            fields, data = {}, []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            data.append(value)
        else:
            fields[name] = value
    if data:
        yield {"event": fields.get("event", "message"), "data": "\n".join(data), **fields}


def read_events(server: ExamsApp, job_id: str, **params: str) -> Stream:
    with server.http.stream("GET", f"{STATUS}/{job_id}/events", params=params) as response:
        if response.status_code != 200:
            response.read()
            return Stream(response, [])
        events = list(parse_sse(response.iter_lines()))
    return Stream(response, events)


def assert_event_stream_headers(stream: Stream, lang: str = "en") -> None:
    assert stream.response.status_code == 200
    assert stream.response.headers["content-type"].split(";")[0] == "text/event-stream"
    assert stream.response.headers["cache-control"] == "no-store"
    assert stream.response.headers["content-language"] == lang


def test_live_job_streams_progress_then_completed_then_closes(
    make_app: Callable[..., ExamsApp], slow_ai: FakeAIProcess
) -> None:
    server = make_app()
    job_id = server.submitted()

    stream = read_events(server, job_id)

    assert_event_stream_headers(stream)
    names = stream.names
    assert names[-1] == "completed", names
    assert set(names[:-1]) == {"progress"}, names
    assert len(names) >= 3, names  # the first document, at least one change, the end
    docs = stream.documents()
    assert all(doc["job_id"] == job_id for doc in docs)
    assert docs[0]["status"] in ("pending", "processing"), docs[0]
    progresses = [doc["progress"] for doc in docs]
    assert progresses == sorted(progresses), progresses
    steps = [SPEC_ORDER.index(doc["current_step"]) for doc in docs]
    assert steps == sorted(steps), [doc["current_step"] for doc in docs]
    progress_docs = docs[:-1]
    assert all(a != b for a, b in itertools.pairwise(progress_docs)), "an unchanged document"
    assert docs[-1] == progress_docs[-1], "the completed event carries the final document"
    final = docs[-1]
    assert (final["status"], final["progress"], final["current_step"]) == ("completed", 100, "completed")
    assert final == server.status(job_id), "events carry the same document as GET status"
    assert "getting_ai_recommendations" in {doc["current_step"] for doc in docs}


def test_finished_job_gives_one_progress_then_completed(app_session: ExamsApp) -> None:
    job_id = app_session.submitted()
    final, _ = app_session.wait_final(job_id)

    stream = read_events(app_session, job_id)

    assert_event_stream_headers(stream)
    assert stream.names == ["progress", "completed"]
    assert stream.documents() == [final, final]
    ids = [event.get("id") for event in stream.events]
    assert len(set(ids)) == 2, ids


def test_late_subscriber_in_arabic_gets_arabic_labels(app_session: ExamsApp) -> None:
    job_id = app_session.submitted()
    app_session.wait_final(job_id)

    stream = read_events(app_session, job_id, lang="ar")

    assert_event_stream_headers(stream, "ar")
    assert stream.names == ["progress", "completed"]
    for doc in stream.documents():
        assert doc["current_step"] == "completed"
        assert doc["status"] == "completed"
        assert doc["current_step_label"] == gettext("step.completed", "ar")
        assert ARABIC.search(doc["current_step_label"])


@pytest.mark.parametrize("job_id", ["5b0d7f3e-2c4a-4e39-9a51-0c7e1f8d2b64", "not-a-uuid", "x" * 300])
def test_unknown_job_events_is_404_problem(app_session: ExamsApp, job_id: str) -> None:
    stream = read_events(app_session, job_id)

    response = stream.response
    assert response.status_code == 404, response.text
    assert response.headers["content-type"].split(";")[0] == "application/problem+json"
    doc = response.json()
    assert (doc["type"], doc["status"]) == ("/problems/not-found", 404)
    assert isinstance(doc["title"], str)
    assert isinstance(doc["detail"], str)


def test_failed_job_ends_with_a_failed_event(make_app: Callable[..., ExamsApp], fake_ai_http: FakeAIProcess) -> None:
    fake_ai_http.set_mode("error_500")
    try:
        server = make_app(JOB_MAX_RETRIES="0")
        job_id = server.submitted()

        stream = read_events(server, job_id)
        status = server.http.get(f"{STATUS}/{job_id}")
    finally:
        fake_ai_http.reset()

    assert_event_stream_headers(stream)
    names = stream.names
    assert names[-1] == "failed", names
    assert set(names[:-1]) == {"progress"}, names
    docs = stream.documents()
    final = docs[-1]
    assert docs[-2] == final
    assert (final["status"], final["current_step"]) == ("failed", "failed")
    assert final["current_step_label"] == gettext("step.failed", "en")
    assert isinstance(final["error_message"], str)
    assert final["error_message"].strip()
    assert final["result"] is None
    # Progress is left where the failing step had it (the AI step: 20-89).
    assert 20 <= final["progress"] < 90, final
    progresses = [doc["progress"] for doc in docs]
    assert progresses == sorted(progresses), progresses
    assert status.status_code == 200
    assert status.json() == final
    assert "retry-after" not in status.headers
    assert status.headers["cache-control"] == "no-store"
