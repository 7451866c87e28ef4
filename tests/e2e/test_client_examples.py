"""The client examples of docs/async-processing.md, run as they are in Chromium, from another origin.

``docs/examples/exam-client.js`` (submit, poll, listen) and ``docs/examples/useExamJob.js`` (the
React hook, under React 18's UMD build vendored in ``tests/e2e/vendor/react``) are served by a
small static server on one port; the app runs on another port with that origin in
``CORS_ALLOW_ORIGINS``. Server failures the app cannot be made to produce on demand (a 503 with
its ``Retry-After``, a dropped connection) are played by Playwright's request routing.
``tests/docs/test_examples.py`` checks that the documented code is these files, byte for byte.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, Request, Route

from support import REPO, ExamsServer, FakeAIProcess, base_env, free_port, sqlite_url

pytestmark = pytest.mark.browser

EXAMPLES = REPO / "docs" / "examples"
VENDOR = Path(__file__).parent / "vendor" / "react"
ANSWERS = {"q1": "b", "q2": ["a", "c"], "q3": 3.14, "q4": True, "q5": "photosynthesis"}
#: A job id the routed (fake) server answers for.
ROUTED_JOB = "00000000-0000-4000-8000-00000000c0de"

# Test scaffolding, not part of the examples: load both modules, and a component using the hook.
INDEX = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>client examples</title>
<script type="importmap">{"imports": {"react": "/react-shim.js"}}</script>
<script src="/vendor/react.production.min.js"></script>
<script src="/vendor/react-dom.production.min.js"></script>
<script type="module">
import * as client from "/examples/exam-client.js";
import { useExamJob } from "/examples/useExamJob.js";
window.client = client;
window.renderJob = (jobId, options) => {
  const h = React.createElement;
  function Job() {
    const { job, error, done } = useExamJob(jobId, options);
    if (error) return h("p", { id: "error", "data-name": error.name }, error.message);
    if (!job) return h("p", { id: "waiting" }, "waiting");
    const data = { "data-status": job.status, "data-done": String(done), "data-progress": String(job.progress) };
    return h("p", { id: "job", ...data }, job.current_step_label);
  }
  const root = ReactDOM.createRoot(document.getElementById("root"));
  root.render(h(Job));
  window.unmountJob = () => root.unmount();
};
window.examplesReady = true;
</script></head><body><div id="root"></div></body></html>
"""
REACT_SHIM = "const React = window.React;\nexport const { useEffect, useState } = React;\nexport default React;\n"
# Every EventSource the page opens, to check the examples close them.
RECORD_EVENT_SOURCES = """
window.__sources = [];
const Original = window.EventSource;
window.EventSource = class extends Original {
  constructor(...args) { super(...args); window.__sources.push(this); }
};
"""


class StaticSite:
    """The examples and the test page, served from their own origin (a thread in this process)."""

    def __init__(self) -> None:
        files = {
            "/": ("text/html", INDEX.encode()),
            "/react-shim.js": ("text/javascript", REACT_SHIM.encode()),
            "/examples/exam-client.js": ("text/javascript", (EXAMPLES / "exam-client.js").read_bytes()),
            "/examples/useExamJob.js": ("text/javascript", (EXAMPLES / "useExamJob.js").read_bytes()),
            "/vendor/react.production.min.js": ("text/javascript", (VENDOR / "react.production.min.js").read_bytes()),
            "/vendor/react-dom.production.min.js": (
                "text/javascript",
                (VENDOR / "react-dom.production.min.js").read_bytes(),
            ),
        }

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path not in files:
                    self.send_error(404)
                    return
                content_type, body = files[self.path]
                self.send_response(200)
                self.send_header("Content-Type", f"{content_type}; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.port = free_port()
        self.origin = f"http://127.0.0.1:{self.port}"
        self.httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> StaticSite:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def site() -> Iterator[StaticSite]:
    with StaticSite() as running:
        yield running


@pytest.fixture(scope="module")
def api(
    site: StaticSite, fake_ai_process: FakeAIProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ExamsServer]:
    """The app on its own port, allowing the examples' origin (and only it) cross-origin."""
    tmp = tmp_path_factory.mktemp("client-examples")
    env = base_env(sqlite_url(tmp), fake_ai_process.base_url, CORS_ALLOW_ORIGINS=site.origin, AI_API_TIMEOUT="30")
    server = ExamsServer(env, tmp / "server.log").prepare().start()
    yield server
    server.stop()


@pytest.fixture
def examples(page: Page, site: StaticSite, api: ExamsServer, fake_ai_http: FakeAIProcess) -> Page:
    """The test page on the examples' origin, both modules loaded (the fake AI answering normally)."""
    page.add_init_script(RECORD_EVENT_SOURCES)
    page.goto(f"{site.origin}/")
    page.wait_for_function("window.examplesReady === true")
    return page


def submit(page: Page, api: ExamsServer) -> dict[str, Any]:
    submission = {"exam_code": "MATH-101", "student_id": "s-1042", "answers": ANSWERS}
    return dict(page.evaluate("([base, s]) => client.submitExam(base, s)", [api.base_url, submission]))


def error_of(page: Page, call: str, *args: Any) -> dict[str, Any]:
    """Run ``call`` (an async function of ``args``) expecting it to reject; its error's name and message."""
    script = (
        f"async (args) => {{ try {{ await ({call})(...args); return null; }}"
        " catch (e) { return {name: e.name, message: e.message}; } }"
    )
    error = page.evaluate(script, list(args))
    assert error is not None, f"{call} did not reject"
    return dict(error)


def closed_event_sources(page: Page) -> list[bool]:
    return list(page.evaluate("window.__sources.map((s) => s.readyState === EventSource.CLOSED)"))


def cors_headers(site: StaticSite, **headers: str) -> dict[str, str]:
    return {
        "Access-Control-Allow-Origin": site.origin,
        "Access-Control-Expose-Headers": "Retry-After",
        "Content-Type": "application/json",
        **headers,
    }


def status_doc(status: str, progress: int, step: str) -> str:
    return json.dumps(
        {
            "job_id": ROUTED_JOB,
            "status": status,
            "progress": progress,
            "current_step": step,
            "current_step_label": step,
            "attempts": 1,
            "result": {"score": 1} if status == "completed" else None,
            "error_message": None,
            "error_code": None,
        }
    )


def test_submit_and_poll_from_another_origin(examples: Page, site: StaticSite, api: ExamsServer) -> None:
    api_requests: list[Request] = []
    examples.on("request", lambda r: api_requests.append(r) if r.url.startswith(api.base_url) else None)
    job = submit(examples, api)
    assert job["status"] == "pending"
    outcome = examples.evaluate(
        """async ([base, id]) => {
            const seen = [];
            const final = await client.pollJob(base, id, { onProgress: (doc) => seen.push(doc.progress) });
            return { final, seen };
        }""",
        [api.base_url, job["job_id"]],
    )
    assert outcome["final"]["status"] == "completed", outcome["final"]
    assert outcome["final"]["result"]["max_score"] > 0
    assert outcome["seen"] == sorted(outcome["seen"])
    assert outcome["seen"][-1] == 100
    assert examples.url.startswith(site.origin)
    assert not site.origin.startswith(api.base_url)
    posts = [r for r in api_requests if r.method == "POST"]
    polls = [r for r in api_requests if r.method == "GET"]
    assert len(posts) == 1, [r.url for r in api_requests]
    assert polls
    assert {r.header_value("origin") for r in posts + polls} == {site.origin}
    assert posts[0].header_value("idempotency-key")


def test_listening_closes_the_event_stream_on_the_final_event(examples: Page, api: ExamsServer) -> None:
    job = submit(examples, api)
    outcome = examples.evaluate(
        """async ([base, id]) => {
            const events = [];
            const final = await client.listenJob(base, id, { onProgress: (doc) => events.push(doc.status) });
            return { final, events };
        }""",
        [api.base_url, job["job_id"]],
    )
    assert outcome["final"]["status"] == "completed"
    assert outcome["events"][-1] == "completed"
    assert closed_event_sources(examples) == [True]


def test_a_refused_event_stream_falls_back_to_polling(examples: Page, site: StaticSite, api: ExamsServer) -> None:
    def unavailable(route: Route) -> None:
        route.fulfill(status=503, headers=cors_headers(site, **{"Retry-After": "1"}), body="{}")

    examples.route(f"{api.base_url}/api/exam-results/status/*/events*", unavailable)
    job = submit(examples, api)
    final = examples.evaluate("([base, id]) => client.listenJob(base, id)", [api.base_url, job["job_id"]])
    assert final["status"] == "completed"
    assert closed_event_sources(examples) == [True]


def test_an_unknown_or_cleaned_up_job_is_not_found(examples: Page, api: ExamsServer) -> None:
    missing = "7d0e4c3a-5b8f-4d6e-9a1b-2c3d4e5f6a7b"
    polled = error_of(examples, "client.pollJob", api.base_url, missing)
    assert polled["name"] == "JobNotFoundError", polled
    listened = error_of(examples, "client.listenJob", api.base_url, missing)
    assert listened["name"] == "JobNotFoundError", listened
    assert closed_event_sources(examples) == [True]


def test_polling_honours_each_retry_after_and_backs_off_on_errors(
    examples: Page, site: StaticSite, api: ExamsServer
) -> None:
    seen: list[float] = []

    def answer(route: Route) -> None:
        seen.append(time.monotonic())
        headers = cors_headers(site, **{"Retry-After": "3"})
        match len(seen):
            case 1:  # the database is down: wait what it says (the back-off alone would be 2 s)
                route.fulfill(status=503, headers=headers, body='{"status": 503}')
            case 2:  # running: this answer asks for 3 s instead of the usual 2
                route.fulfill(
                    status=200, headers=headers, body=status_doc("processing", 42, "getting_ai_recommendations")
                )
            case 3:  # no answer at all (connection refused): back off 2 s
                route.abort("connectionrefused")
            case _:
                route.fulfill(status=200, headers=cors_headers(site), body=status_doc("completed", 100, "completed"))

    examples.route(f"{api.base_url}/api/exam-results/status/{ROUTED_JOB}", answer)
    final = examples.evaluate("([base, id]) => client.pollJob(base, id)", [api.base_url, ROUTED_JOB])
    assert final["status"] == "completed"
    gaps = [later - earlier for earlier, later in itertools.pairwise(seen)]
    assert len(gaps) == 3, gaps
    # Lower bounds only: a slow machine waits longer, never shorter.
    assert gaps[0] >= 2.9, gaps
    assert gaps[1] >= 2.9, gaps
    assert gaps[2] >= 1.9, gaps


def test_polling_gives_up_after_the_stated_time(examples: Page, site: StaticSite, api: ExamsServer) -> None:
    calls: list[float] = []

    def down(route: Route) -> None:
        calls.append(time.monotonic())
        route.fulfill(status=503, headers=cors_headers(site, **{"Retry-After": "1"}), body="{}")

    examples.route(f"{api.base_url}/api/exam-results/status/{ROUTED_JOB}", down)
    error = error_of(
        examples, "(base, id) => client.pollJob(base, id, { giveUpAfterMs: 1500 })", api.base_url, ROUTED_JOB
    )
    assert error["name"] == "GaveUpError", error
    assert len(calls) == 2  # at 0 s and 1 s; a third try (2 s) would pass the deadline


def test_a_token_is_sent_as_bearer_and_polling_replaces_the_stream(examples: Page, api: ExamsServer) -> None:
    # EventSource cannot send headers, so with a token (API_AUTH=tokens) the client polls. This
    # server has API_AUTH=off and ignores the header: what is checked is what the client sends.
    api_requests: list[Request] = []
    examples.on("request", lambda r: api_requests.append(r) if r.url.startswith(api.base_url) else None)
    submission = {"exam_code": "MATH-101", "student_id": "s-1042", "answers": ANSWERS}
    final = examples.evaluate(
        """async ([base, s]) => {
            const job = await client.submitExam(base, s, { token: "t0ken" });
            return client.listenJob(base, job.job_id, { token: "t0ken" });
        }""",
        [api.base_url, submission],
    )
    assert final["status"] == "completed"
    assert closed_event_sources(examples) == []
    sent = [r for r in api_requests if r.method in {"GET", "POST"}]
    assert len(sent) >= 2
    assert {r.header_value("authorization") for r in sent} == {"Bearer t0ken"}


@pytest.mark.parametrize("transport", ["events", "poll"])
def test_the_react_hook_follows_a_job_to_its_result(examples: Page, api: ExamsServer, transport: str) -> None:
    job = submit(examples, api)
    examples.evaluate(
        "([id, options]) => renderJob(id, options)", [job["job_id"], {"baseUrl": api.base_url, "transport": transport}]
    )
    done = examples.locator("#job[data-done='true']")
    done.wait_for(timeout=30_000)
    assert done.get_attribute("data-status") == "completed"
    assert done.get_attribute("data-progress") == "100"
    if transport == "events":
        assert closed_event_sources(examples) == [True]
    else:
        assert closed_event_sources(examples) == []


def test_the_react_hook_stops_following_when_unmounted(
    examples: Page, api: ExamsServer, fake_ai_http: FakeAIProcess
) -> None:
    fake_ai_http.set_mode("ok", latency=5)
    job = submit(examples, api)
    examples.evaluate("([id, options]) => renderJob(id, options)", [job["job_id"], {"baseUrl": api.base_url}])
    examples.locator("#job[data-status='processing']").wait_for(timeout=30_000)
    assert closed_event_sources(examples) == [False]
    examples.evaluate("unmountJob()")
    assert closed_event_sources(examples) == [True]


def test_the_react_hook_reports_a_missing_job(examples: Page, api: ExamsServer) -> None:
    missing = "7d0e4c3a-5b8f-4d6e-9a1b-2c3d4e5f6a7b"
    examples.evaluate("([id, options]) => renderJob(id, options)", [missing, {"baseUrl": api.base_url}])
    error = examples.locator("#error")
    error.wait_for(timeout=30_000)
    assert error.get_attribute("data-name") == "JobNotFoundError"
