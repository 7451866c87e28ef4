"""Drill: the web process restarted while clients hold open event streams.

Clients follow their jobs on ``GET …/status/{job_id}/events`` as a browser's ``EventSource``
does: when the stream breaks they wait, connect again with ``Last-Event-ID`` and go on. The web
process is stopped (SIGTERM) and started again on the same port while the jobs run (they run in
the worker, which keeps going). Every client must end with its job's final event, whether the job
finished before, during or after the restart; submissions meanwhile are stored or never answered.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from production_support import Stack, wait_until
from services import PrivateRedis, Traffic, start_production

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

FINAL_EVENTS = ("completed", "failed", "cancelled")


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
    product.ai.set_timing(latency=8.0, jitter=2.0)  # jobs finish before, during and after the restart
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
        stopped = time.monotonic()
        web.stop()  # SIGTERM: uvicorn's graceful shutdown, streams and all
        stop_seconds = time.monotonic() - stopped
        time.sleep(3)
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
    assert stop_seconds < 10, stop_seconds  # the streams were cut, not waited for
