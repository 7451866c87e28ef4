"""A short-lived in-process cache of exam definitions for the submit path.

Every submission is checked against its exam; reading and decoding the definition each time
would cost a query per request. Entries live a few seconds, so a catalog reload shows quickly.
"""

from __future__ import annotations

import time

from sqlalchemy.ext.asyncio import AsyncSession

from exams.definitions import ExamDefinition
from exams.services import ExamService

__all__ = ("ExamCache",)

TTL_SECONDS = 5.0
MAX_ENTRIES = 10_000


class ExamCache:
    """Exam code to (expiry, definition); one per web application."""

    def __init__(self, ttl: float = TTL_SECONDS) -> None:
        self.ttl = ttl
        self._entries: dict[str, tuple[float, ExamDefinition | None]] = {}

    async def get(self, session: AsyncSession, code: str) -> ExamDefinition | None:
        """Return the exam definition for ``code`` (``None`` if unknown), cached briefly."""
        now = time.monotonic()
        hit = self._entries.get(code)
        if hit is not None and hit[0] > now:
            return hit[1]
        definition = await ExamService(session=session).get_definition(code)
        if len(self._entries) > MAX_ENTRIES:
            self._entries.clear()
        self._entries[code] = (now + self.ttl, definition)
        return definition
