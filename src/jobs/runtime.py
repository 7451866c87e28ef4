"""Building a worker process's pipeline runtime from settings (database engine and AI client)."""

from __future__ import annotations

from typing import Any, cast

import httpx

from ai_client import AIClient, create_fake_ai_app
from core.db import create_engine
from core.settings import Settings, get_settings
from jobs.pipeline import PipelineRuntime

__all__ = ("build_ai_client", "build_runtime")

#: Base URL the in-process fake AI answers on (never leaves the process).
BUILTIN_FAKE_AI_URL = "http://builtin-fake-ai/v1"


def build_ai_client(settings: Settings) -> AIClient | None:
    """The AI client for ``settings``; ``None`` when the AI is disabled.

    With no ``AI_API_BASE_URL`` the client talks to the built-in fake AI inside this process
    (over an ASGI transport), so a first run needs no AI account.
    """
    if not settings.ai_api_enabled:
        return None
    if settings.ai_api_base_url:
        return AIClient(
            base_url=settings.ai_api_base_url,
            api_key=settings.ai_api_key,
            model=settings.ai_api_model,
            timeout=settings.ai_api_timeout,
        )
    app = create_fake_ai_app(latency=settings.fake_ai_latency, error_rate=0.0)
    return AIClient(
        base_url=BUILTIN_FAKE_AI_URL,
        api_key=None,
        model=settings.ai_api_model,
        timeout=settings.ai_api_timeout,
        transport=httpx.ASGITransport(app=cast("Any", app)),
    )


def build_runtime(settings: Settings | None = None) -> PipelineRuntime:
    """Create this process's runtime; call it on the event loop that will run the jobs."""
    settings = settings or get_settings()
    return PipelineRuntime(settings=settings, engine=create_engine(settings), ai=build_ai_client(settings))
