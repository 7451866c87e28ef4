"""Drill: the disk of an embedded (SQLite) deployment fills up, then space comes back.

``exams serve`` in embedded mode (one process, SQLite, in-process worker) with its database on
a small tmpfs of its own, submissions arriving all along. The disk is filled to the last byte:
a submission that cannot be written is refused with a ``503`` problem (nothing half-written),
jobs caught mid-way wait for space (a full disk is an outage, not the job's failure), and once
space is back every job finishes and the database passes ``PRAGMA integrity_check``.

The disk fills once jobs are both queued (a burst on top of the steady submissions: the embedded
worker has 8 threads) and waiting for the AI. The other steps are only database work, which takes
milliseconds on a tmpfs: there is no connection to slow down here (the PostgreSQL drills put a
proxy with latency before the database), so the drill prints how many jobs were at each step when
the disk filled but does not wait for those.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from production_support import Stack, wait_until
from services import AI_JITTER, AI_LATENCY, Traffic, check_outcome, sqlite_rows, wait_for_every_step

from support import base_env, json_lines


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 16 MiB tmpfs of the drill's own (mounting needs root: without it the drill fails)."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16m,mode=0755", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.fail(f"cannot mount a small tmpfs for the disk-full drill (root needed): {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "--lazy", str(mount_point)], check=False)


def _fill(directory: Path) -> Path:
    """Write a file until the file system is full; the file (delete it to give the space back)."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        for size in (1 << 16, 512, 1):  # big writes, then the last few bytes
            chunk = b"\0" * size
            with contextlib.suppress(OSError):  # ENOSPC: full
                while True:
                    os.write(fd, chunk)
    finally:
        os.close(fd)
    return filler


def test_sqlite_disk_full_then_space_back(small_disk: Path, stack: Stack) -> None:
    database = small_disk / "exams.db"
    ai = stack.fake_ai(latency=AI_LATENCY, jitter=AI_JITTER)
    env = base_env(f"sqlite+aiosqlite:///{database}", ai.base_url, AI_API_TIMEOUT="10", JOB_STALE_AFTER="10")
    stack.prepare(env)
    server = stack.web(env)
    traffic = Traffic(server.base_url, interval=0.3)
    rows = sqlite_rows(database, traffic.prefix)
    try:
        traffic.burst(12)
        traffic.start()
        caught = wait_for_every_step(rows, steps=("queued", "getting_ai_recommendations"))
        filler = _fill(small_disk)
        refused = len(traffic.refused)
        wait_until(lambda: len(traffic.refused) > refused + 3, 30, "submissions refused on the full disk")
        time.sleep(5)  # jobs caught mid-way wait for room
        filler.unlink()
        back = time.monotonic()
        traffic.wait_accepted(5)
    finally:
        traffic.stop()
    outcome = check_outcome(rows, traffic, back, ai_requests=ai.requests, logs=server.log)
    outcome.report("SQLite disk full (embedded), then space back", caught)

    refusal = [r for r in json_lines(server.log()) if r.get("event") == "database unavailable"]
    assert refusal, "the full disk was not logged as the reason for the 503s"
    assert "full" in str(refusal[0].get("error")), refusal[0]
    server.stop()
    with contextlib.closing(sqlite3.connect(database)) as db:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    assert os.path.getsize(database) > 0
