"""A short-lived in-process cache of exam definitions for the submit path.

Every submission is checked against its exam; reading and decoding the definition each time
would cost a query per request. Entries live a few seconds, so a catalog reload shows quickly.
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from exams.definitions import ExamDefinition
from exams.services import ExamService

__all__ = ("ExamCache",)

TTL_SECONDS = 5.0


class ExamCache:
    """Per-application cache: ``app.state.exam_cache`` maps code to (expiry, definition)."""

    @staticmethod
    async def get(app: Any, session: AsyncSession, code: str) -> ExamDefinition | None:
        """Return the exam definition for ``code`` (``None`` if unknown), cached briefly."""
        cache: dict[str, tuple[float, ExamDefinition | None]] = app.state.setdefault("exam_cache", {})
        now = time.monotonic()
        hit = cache.get(code)
        if hit is not None and hit[0] > now:
            return hit[1]
        definition = await ExamService(session=session).get_definition(code)
        if len(cache) > 10_000:
            cache.clear()
        cache[code] = (now + TTL_SECONDS, definition)
        return definition
