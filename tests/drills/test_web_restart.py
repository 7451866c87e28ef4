"""Drill: the web process restarted while clients hold open event streams.

Clients follow their jobs on ``GET …/status/{job_id}/events`` as a browser's ``EventSource``
does: when the stream breaks they wait, connect again with ``Last-Event-ID`` and go on. The web
process is stopped (SIGTERM) and started again on the same port while the jobs run (they run in
the worker, which keeps going), and kept down until at least one followed job has finished: its
final event is written while no stream is open, the case where a client could miss it. Every
client must end with its job's final event, whether the job finished before, during or after the
restart; submissions meanwhile are stored or never answered.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from production_support import Stack, db_rows, wait_until
from services import PrivateRedis, Traffic, start_production

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

FINAL_EVENTS = ("completed", "failed", "cancelled")
#: The fake AI's answer time here (seconds, plus up to 2): the followed jobs, submitted over 5 s,
#: are still running once every client holds a stream and the web process has stopped (which
#: takes its graceful shutdown, about 5 s), and finish while it is down or after.
AI_SECONDS = 12.0


def _finished_between(database_url: str, job_ids: list[str], since: datetime, until: datetime) -> list[str]:
    """Those of ``job_ids`` whose ``completed_at`` falls after ``since`` and before ``until``."""
    rows = db_rows(
        database_url,
        "SELECT job_id::text AS job_id FROM exam_processing_jobs"
        " WHERE job_id::text = ANY($1::text[]) AND completed_at > $2 AND completed_at < $3",
        job_ids,
        since,
        until,
    )
    return [str(r["job_id"]) for r in rows]


@dataclass
class EventClient:
    """An ``EventSource``: follows one job's events, reconnecting with ``Last-Event-ID``."""

    base_url: str
    job_id: str
    last_id: str | None = None
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    connections: int = 0
    final: dict[str, Any] | None = None
    error: str | None = None

    def run(self, deadline: float) -> None:
        url = f"{self.base_url}/api/exam-results/status/{self.job_id}/events"
        while self.final is None and time.monotonic() < deadline:
            headers = {"Last-Event-ID": self.last_id} if self.last_id else {}
            try:
                with httpx.stream("GET", url, headers=headers, timeout=httpx.Timeout(10, read=30)) as response:
                    if response.status_code != 200:
                        self.error = f"HTTP {response.status_code}"
                        return
                    self.connections += 1
                    self._read(response)
            except httpx.TransportError:
                pass  # the server went away: wait, then connect again, as EventSource does
            if self.final is None:
                time.sleep(0.5)

    def _read(self, response: httpx.Response) -> None:
        name, data = "message", ""
        for line in response.iter_lines():
            if line.startswith("id:"):
                self.last_id = line[3:].strip()
            elif line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data += line[5:].strip()
            elif not line and data:
                document = json.loads(data)
                self.events.append((name, document))
                if name in FINAL_EVENTS:
                    self.final = document
                    return
                name, data = "message", ""


def test_web_restarted_while_clients_follow_event_streams(
    pg_url: str, private_redis: PrivateRedis, stack: Stack
) -> None:
    product = start_production(stack, pg_url, restartable_web=True, REDIS_URL=private_redis.url, AI_API_TIMEOUT="30")
    product.ai.set_timing(latency=AI_SECONDS, jitter=2.0)  # jobs finish during and after the restart
    web = product.web
    traffic = Traffic(web.base_url, interval=0.5).start()
    clients: list[EventClient] = []
    threads: list[threading.Thread] = []
    deadline = time.monotonic() + 90
    try:
        traffic.wait_accepted(10)
        for job_id in list(traffic.accepted.values()):
            client = EventClient(web.base_url, job_id)
            clients.append(client)
            threads.append(threading.Thread(target=client.run, args=(deadline,), daemon=True))
        for thread in threads:
            thread.start()
        wait_until(lambda: all(c.connections for c in clients), 30, "every client to hold a stream")
        followed = [c.job_id for c in clients]
        stopped = time.monotonic()
        web.stop()  # SIGTERM: uvicorn's graceful shutdown, streams and all
        stop_seconds = time.monotonic() - stopped
        down_since = datetime.now(UTC)
        time.sleep(3)
        # Down until a followed job has finished: its final event comes while no stream is open.
        wait_until(
            lambda: _finished_between(pg_url, followed, down_since, datetime.now(UTC)),
            30,
            "a followed job to finish while the web process is down",
        )
        restarting = datetime.now(UTC)
        web.start()
        back = time.monotonic()
        traffic.wait_accepted(5)
    finally:
        traffic.stop()
    for thread in threads:
        thread.join(max(deadline - time.monotonic(), 1))
    outcome = product.outcome(pg_url, traffic, back)
    outcome.report("web process restarted under open event streams")
    print(f"[drill] the web process stopped {stop_seconds:.1f} s after SIGTERM")
    assert [c.error for c in clients if c.error] == []
    # Every client got its job's final event, and reconnected to get it when the restart cut it off.
    assert all(c.final is not None and c.final["status"] == "completed" for c in clients), [
        (c.job_id, c.events[-1:] if c.events else None) for c in clients if c.final is None
    ]
    assert any(c.connections > 1 for c in clients), "no stream was cut by the restart: nothing was drilled"
    # At least one job finished while the web process was down, and its client got the final event
    # after reconnecting.
    finished_while_down = _finished_between(pg_url, followed, down_since, restarting)
    assert finished_while_down, "no followed job finished while the web process was down: nothing was drilled"
    by_job = {c.job_id: c for c in clients}
    assert all(by_job[j].connections > 1 and by_job[j].final is not None for j in finished_while_down)
    print(
        f"[drill] {len(finished_while_down)} of {len(clients)} followed jobs finished while the web process was "
        f"down ({(restarting - down_since).total_seconds():.1f} s)"
    )
    assert stop_seconds < 10, stop_seconds  # the streams were cut, not waited for
