"""Helpers of the AI client tests: run the fake AI server for real, build requests.

Imported by name (pytest puts this directory on ``sys.path``); fixtures live in conftest.py.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import uvicorn
from litestar.types import ASGIApp

from ai_client import GradeSummary, RecommendationRequest, TopicScore

API_KEY = "sk-test-0123456789abcdef"

MakeRequest = Callable[..., RecommendationRequest]


@dataclass
class FakeAI:
    """A running fake AI server and its control endpoints."""

    root: str
    http: httpx.Client

    @property
    def base_url(self) -> str:
        return f"{self.root}/v1"

    def set_mode(self, mode: str, *, times: int | None = None, latency: float | None = None) -> None:
        body = {"mode": mode, "times": times, "latency": latency}
        self.http.put(f"{self.root}/_fake/mode", json=body).raise_for_status()

    def stats(self) -> dict[str, Any]:
        response = self.http.get(f"{self.root}/_fake/stats")
        response.raise_for_status()
        return dict(response.json())

    def reset(self) -> None:
        self.http.post(f"{self.root}/_fake/reset").raise_for_status()


@contextlib.contextmanager
def serve(app: ASGIApp) -> Iterator[str]:
    """Run ``app`` with uvicorn in a background thread on a free port; yield its root URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    root = f"http://127.0.0.1:{sock.getsockname()[1]}"
    config = uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=1)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        wait_healthy(root)
        yield root
    finally:
        server.should_exit = True
        thread.join(timeout=5)
        sock.close()


def wait_healthy(root: str, timeout: float = 10) -> None:
    """Poll ``GET /health`` until it answers 200."""
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=1) as http:
        while True:
            try:
                if http.get(f"{root}/health").status_code == 200:
                    return
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.02)


def make_request(topics: list[tuple[str, float, float]], *, locale: str = "en") -> RecommendationRequest:
    """A request for a grading with ``(topic, score, max_score)`` per topic, in exam order."""
    scores = [TopicScore(name, score, top, round(100 * score / top, 1)) for name, score, top in topics]
    score = sum(t.score for t in scores)
    max_score = sum(t.max_score for t in scores) or 1
    grading = GradeSummary(
        score=score,
        max_score=max_score,
        percentage=round(100 * score / max_score, 1),
        passed=score / max_score >= 0.6,
        topics=scores,
    )
    return RecommendationRequest("MATH-101", "Algebra basics", locale, grading)
