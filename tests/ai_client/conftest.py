"""Fixtures of the AI client tests: the fake AI server, started for real on a free localhost port."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import httpx
import pytest
from fake_ai_support import API_KEY, FakeAI, MakeRequest, make_request, serve

from ai_client import create_fake_ai_app


@pytest.fixture(scope="session")
def http() -> Iterator[httpx.Client]:
    """One synchronous HTTP client for the whole session (building one per call is slow)."""
    with httpx.Client() as client:
        yield client


@pytest.fixture(scope="session")
def fake_ai_server(http: httpx.Client) -> Iterator[FakeAI]:
    with serve(create_fake_ai_app(latency=0, error_rate=0, seed=1, api_key=API_KEY)) as root:
        yield FakeAI(root, http)


@pytest.fixture
def fake_ai(fake_ai_server: FakeAI) -> FakeAI:
    """The shared fake server, reset: mode ok, no latency, zero stats."""
    fake_ai_server.reset()
    return fake_ai_server


@pytest.fixture
def closed_port_url() -> str:
    """A base URL where nothing listens (connection refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


@pytest.fixture(name="make_request")
def make_request_fixture() -> MakeRequest:
    """Build a request from ``[(topic, score, max_score), ...]`` and an optional ``locale=``."""
    return make_request
