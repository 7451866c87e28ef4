"""Fixtures of the jobs tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from production_support import Stack


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    """Production-mode processes (PostgreSQL, Redis, workers, web, scheduler), all stopped afterwards."""
    with Stack(tmp_path) as running:
        yield running
