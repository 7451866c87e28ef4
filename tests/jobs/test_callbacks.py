"""Completion callbacks: who may receive them, the signature, and deliveries with retries.

A real HTTP receiver on 127.0.0.1 (a thread of this process) and real SQLite / PostgreSQL
databases; the actor's first retry delay is shortened (the production value is 5 s).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import http.server
import itertools
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import dramatiq
import msgspec
import pytest
from sqlalchemy import select, update

from core import metrics
from core.db import Database
from core.settings import Settings, load_settings
from jobs.actors import JobActor
from jobs.callbacks import (
    EVENTS,
    attempt_delivery,
    callback_url_problems,
    due_deliveries,
    host_allowed,
    list_deliveries,
    new_delivery,
    signature,
)
from jobs.models import CallbackDelivery, ExamProcessingJob, utcnow
from jobs.pipeline import PipelineRuntime
from server.migrate import run_migrations

SECRET = "callback-secret-for-tests"


# --- who may receive callbacks --------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "allowed", "expected"),
    [
        ("hooks.school.example", ("hooks.school.example",), True),
        ("HOOKS.School.Example.", ("hooks.school.example",), True),
        ("a.district.edu", ("*.district.edu",), True),
        ("a.b.district.edu", ("*.district.edu",), True),
        ("district.edu", ("*.district.edu",), False),
        ("evildistrict.edu", ("*.district.edu",), False),
        ("district.edu.evil.com", ("*.district.edu",), False),
        ("127.0.0.1", ("127.0.0.1",), True),
        ("10.0.0.1", ("*.district.edu",), False),
        ("anything", (), False),
    ],
)
def test_host_allowed(host: str, allowed: tuple[str, ...], expected: bool) -> None:
    assert host_allowed(host, allowed) is expected


@pytest.mark.parametrize(
    ("url", "key"),
    [
        ("https://hooks.school.example/exams", None),
        ("http://hooks.school.example:8080/x?y=1", None),
        ("https://other.example/exams", "validation.callback_host"),
        ("ftp://hooks.school.example/", "validation.callback_url"),
        ("https://user:pw@hooks.school.example/", "validation.callback_url"),
        ("https:///nohost", "validation.callback_url"),
        ("https://hooks.school.example/a b", "validation.callback_url"),
        ("https://hooks.school.example:99999/", "validation.callback_url"),
        ("https://hooks.school.example/" + "x" * 2100, "validation.callback_url"),
        (42, "validation.not_string"),
    ],
)
def test_callback_url_problems(url: object, key: str | None) -> None:
    problems = callback_url_problems(url, ("hooks.school.example",))
    assert [p[1] for p in problems] == ([key] if key else [])
    assert all(p[0] == "callback_url" for p in problems)


def test_an_empty_allow_list_disables_callbacks() -> None:
    problems = callback_url_problems("https://hooks.school.example/", ())
    assert [p[1] for p in problems] == ["validation.callbacks_disabled"]


def test_signature_is_hmac_sha256_of_the_raw_body() -> None:
    body = b'{"job_id":"x"}'
    expected = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert signature(SECRET, body) == f"sha256={expected}"


# --- a receiver -----------------------------------------------------------------------------


@dataclass
class Receiver:
    """An HTTP server on 127.0.0.1 answering the statuses of ``script`` in turn (then 200)."""

    script: list[int] = field(default_factory=list)
    requests: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/exams"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            state.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
            status = state.script.pop(0) if state.script else 200
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


# --- deliveries -----------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'callbacks.db'}"
    else:
        url = request.getfixturevalue("pg_url")
    settings = load_settings(
        {
            "DATABASE_URL": url,
            "CALLBACK_SECRET": SECRET,
            "CALLBACK_ALLOWED_HOSTS": "127.0.0.1,*.district.example.edu",
            "AI_API_ENABLED": "false",
        },
        env_file=tmp_path / "absent.env",
    )
    run_migrations(settings)
    return settings


async def finished_job(db: Database, url: str, status: str = "completed") -> UUID:
    """A job that just reached ``status`` with its delivery committed alongside; the delivery id."""
    async with db.transaction() as session:
        job = ExamProcessingJob(
            exam_code="MATH-101", student_id="s-1042", answers={"q1": "b"}, callback_url=url, locale="ar"
        )
        session.add(job)
        await session.flush()
        now = utcnow()
        if status == "completed":
            job.mark_completed({"score": 1, "percentage": 100.0, "passed": True}, now)
        elif status == "failed":
            job.mark_failed("boom", now)
        else:
            job.mark_cancelled(now)
        delivery = new_delivery(job, now)
        assert delivery is not None
        session.add(delivery)
        return delivery.delivery_id


async def delivery_row(db: Database, delivery_id: UUID) -> CallbackDelivery:
    async with db.transaction() as session:
        row = await session.scalar(select(CallbackDelivery).where(CallbackDelivery.delivery_id == delivery_id))
        assert row is not None
        return row


def counter(outcome: str) -> float:
    return metrics.CALLBACKS.labels(outcome=outcome)._value.get()


async def test_the_actor_retries_until_delivered_with_the_same_id_and_signature(
    db: Database, settings: Settings, receiver: Receiver
) -> None:
    receiver.script = [500, 500, 200]
    delivery_id = await finished_job(db, receiver.url)
    actor = JobActor(lambda: PipelineRuntime(settings, db, None), callback_first_retry=0.05)
    before = {o: counter(o) for o in ("delivered", "retry", "gave_up")}
    delays = []
    for _ in range(5):  # what Dramatiq does with each Retry: the same message again after its delay
        try:
            await actor.deliver_callback(str(delivery_id))
        except dramatiq.Retry as retry:
            delay = (retry.delay or 0) / 1000
            delays.append(delay)
            await asyncio.sleep(delay)
        else:
            break
    assert delays == [0.05, 0.1]  # the first wait, then doubled
    assert len(receiver.requests) == 3
    ids = {headers["x-exams-delivery"] for headers, _ in receiver.requests}
    assert ids == {str(delivery_id)}
    for headers, body in receiver.requests:
        assert headers["x-exams-event"] == "job.completed"
        assert headers["content-type"] == "application/json"
        expected = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        assert hmac.compare_digest(headers["x-exams-signature"], f"sha256={expected}")
    bodies = {body for _, body in receiver.requests}
    assert len(bodies) == 1  # the same bytes every time
    doc = msgspec.json.decode(bodies.pop())
    assert doc["status"] == "completed"
    assert doc["current_step_label"] == "مكتمل"  # the submitter's language
    row = await delivery_row(db, delivery_id)
    assert (row.state, row.attempts, row.last_status, row.last_error) == ("delivered", 3, 200, None)
    assert row.delivered_at is not None
    assert counter("delivered") - before["delivered"] == 1
    assert counter("retry") - before["retry"] == 2
    # A duplicate message afterwards does nothing.
    assert await attempt_delivery(db, settings, delivery_id) is None
    assert len(receiver.requests) == 3


@pytest.mark.parametrize("status", ["failed", "cancelled"])
async def test_failed_and_cancelled_jobs_are_called_back_too(
    db: Database, settings: Settings, receiver: Receiver, status: str
) -> None:
    delivery_id = await finished_job(db, receiver.url, status)
    assert await attempt_delivery(db, settings, delivery_id) is None
    headers, body = receiver.requests[0]
    assert headers["x-exams-event"] == EVENTS[status]
    assert msgspec.json.decode(body)["status"] == status


async def test_a_redirect_is_not_followed(db: Database, settings: Settings, receiver: Receiver) -> None:
    receiver.script = [302]
    delivery_id = await finished_job(db, receiver.url)
    delay = await attempt_delivery(db, settings, delivery_id, first_retry=0.01)
    assert delay == 0.01
    row = await delivery_row(db, delivery_id)
    assert (row.state, row.last_status, row.last_error) == ("pending", 302, "HTTP 302")
    assert len(receiver.requests) == 1


async def test_a_name_resolving_to_a_private_address_is_refused(db: Database, settings: Settings) -> None:
    delivery_id = await finished_job(db, "https://hooks.district.example.edu/x")

    async def resolve(host: str, port: int) -> list[str]:
        return ["10.1.2.3"]

    assert await attempt_delivery(db, settings, delivery_id, resolve=resolve) is None
    row = await delivery_row(db, delivery_id)
    assert row.state == "gave_up"
    assert "non-public" in (row.last_error or "")


async def test_no_answer_is_retried_and_24_hours_later_given_up(db: Database, settings: Settings) -> None:
    # Port 9 on 127.0.0.1: nothing listens, the connection is refused.
    delivery_id = await finished_job(db, "http://127.0.0.1:9/x")
    delay = await attempt_delivery(db, settings, delivery_id, first_retry=0.01)
    assert delay == 0.01
    assert (await delivery_row(db, delivery_id)).last_error
    async with db.transaction() as session:
        await session.execute(
            update(CallbackDelivery)
            .where(CallbackDelivery.delivery_id == delivery_id)
            .values(created_at=utcnow() - timedelta(hours=25), next_attempt_at=utcnow())
        )
    assert await attempt_delivery(db, settings, delivery_id) is None
    row = await delivery_row(db, delivery_id)
    assert (row.state, row.attempts) == ("gave_up", 2)
    async with db.transaction() as session:
        failed = await list_deliveries(session, failed=True)
    assert [d.delivery_id for d in failed] == [delivery_id]


async def test_lost_messages_are_found_by_the_outbox_pass(db: Database, settings: Settings) -> None:
    delivery_id = await finished_job(db, "http://127.0.0.1:9/x")
    async with db.transaction() as session:
        assert await due_deliveries(session, overdue=60) == []
        await session.execute(update(CallbackDelivery).values(next_attempt_at=utcnow() - timedelta(minutes=5)))
    async with db.transaction() as session:
        assert await due_deliveries(session, overdue=60) == [delivery_id]
    async with db.transaction() as session:
        assert await due_deliveries(session, overdue=60) == []  # marked due now: not sent twice


def test_the_backoff_starts_within_10_s_doubles_and_stops_at_an_hour() -> None:
    from core.retry import backoff_seconds
    from jobs.callbacks import FIRST_RETRY_SECONDS, GIVE_UP_AFTER, MAX_RETRY_SECONDS

    waits = [backoff_seconds(n, base=FIRST_RETRY_SECONDS, cap=MAX_RETRY_SECONDS, jitter=False) for n in range(1, 40)]
    assert waits[0] <= 10
    assert all(b <= 2 * a for a, b in itertools.pairwise(waits))
    assert max(waits) == 3600
    assert sum(waits) >= GIVE_UP_AFTER.total_seconds()
