"""The composition root: what it builds for a consuming process, and what it closes again."""

from __future__ import annotations

from pathlib import Path

from dramatiq.asyncio import get_event_loop_thread

from core.settings import load_settings
from jobs.embedded import EmbeddedWorker
from jobs.pipeline import PipelineRuntime
from server.wiring import Wiring
from support import sqlite_url


def test_stopping_the_embedded_worker_closes_its_runtime(tmp_path: Path) -> None:
    """The worker's database pool and AI client are closed on its own event loop at shutdown."""
    settings = load_settings({"DATABASE_URL": sqlite_url(tmp_path)}, env_file=tmp_path / "absent.env")
    broker, actor = Wiring(settings).broker(worker=True)
    worker = EmbeddedWorker(broker, settings)
    worker.start()
    try:

        async def build() -> PipelineRuntime:
            return actor.runtime()

        thread = get_event_loop_thread()
        assert thread is not None
        runtime = thread.run_coroutine(build())
        assert runtime.ai is not None  # the built-in fake AI
        closed: list[str] = []
        dispose, aclose = runtime.database.dispose, runtime.ai.aclose

        async def record_dispose() -> None:
            closed.append("database")
            await dispose()

        async def record_aclose() -> None:
            closed.append("ai")
            await aclose()

        runtime.database.dispose = record_dispose  # type: ignore[method-assign]
        runtime.ai.aclose = record_aclose  # type: ignore[method-assign]
    finally:
        worker.stop()
    assert sorted(closed) == ["ai", "database"]


def test_a_sending_process_has_no_runtime(tmp_path: Path) -> None:
    """A web process of a production broker only sends: asking it to run a job is an error."""
    settings = load_settings(
        {"DATABASE_URL": sqlite_url(tmp_path), "QUEUE_CONNECTION": "redis"}, env_file=tmp_path / "absent.env"
    )
    _broker, actor = Wiring(settings).broker(worker=False)

    async def build() -> PipelineRuntime:
        return actor.runtime()

    import asyncio

    import pytest

    with pytest.raises(RuntimeError, match="only sends jobs"):
        asyncio.run(build())
