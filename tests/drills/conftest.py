"""Fixtures of the fault drills: the production-mode processes and private services to break.

The processes come from ``tests/jobs/production_support.py`` (web, worker, scheduler, fake AI,
each a real process); the services a drill stops or kills are its own (``services.py``).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# production_support lives with the jobs tests; pytest puts only this directory on sys.path.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "jobs"))

from production_support import Stack
from services import PrivatePostgres, PrivateRabbitMQ, PrivateRedis


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    """The drill's processes, all stopped afterwards (before the services they use)."""
    with Stack(tmp_path) as running:
        yield running


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    """A PostgreSQL server of the drill's own, running (stopped and removed afterwards)."""
    server = PrivatePostgres().init()
    try:
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    """A ``redis-server`` of the drill's own, without persistence."""
    server = PrivateRedis(tmp_path / "redis").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def private_rabbitmq() -> Iterator[PrivateRabbitMQ]:
    """A RabbitMQ node of the drill's own, running."""
    node = PrivateRabbitMQ()
    try:
        node.start()
        yield node
    finally:
        node.close()
