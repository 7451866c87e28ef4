"""The composition root: what it builds for a consuming process, and what it closes again."""

from __future__ import annotations

from pathlib import Path

from dramatiq.asyncio import get_event_loop_thread

from core.settings import load_settings
from jobs.embedded import EmbeddedWorker
from jobs.pipeline import PipelineRuntime
from server.wiring import WORKER_POOL_TIMEOUT, Wiring
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


async def test_a_worker_holds_as_many_ai_requests_as_the_guard_lets_out(tmp_path: Path, pg_url: str) -> None:
    """httpx's default pool (100 connections) would queue the 101st AI request of a 500-thread
    worker behind the others (bench/inflight.py: completions came in waves of 100); its database
    pool waits a minute for a connection rather than fail the job."""
    settings = load_settings(
        {
            "DATABASE_URL": pg_url,
            "AI_API_BASE_URL": "http://ai.invalid/v1",
            "AI_MAX_CONCURRENCY": "500",
        },
        env_file=tmp_path / "no.env",
    )
    runtime = Wiring(settings).pipeline_runtime()
    try:
        assert runtime.ai is not None
        pools = [pool._transport._pool._max_connections for pool in runtime.ai._pools]  # type: ignore[attr-defined]
        assert sum(pools) == 500
        assert runtime.database.engine.pool.timeout() == WORKER_POOL_TIMEOUT == 60  # type: ignore[attr-defined]
    finally:
        await runtime.ai.aclose()
        await runtime.database.dispose()
