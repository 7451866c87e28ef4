"""The errors the AI client raises, split by whether asking again later can help.

    AIError
    ├── AITransientError  timeout, connection error, HTTP 429, HTTP 5xx: retry later
    └── AIPermanentError  any other 4xx, an answer that is not JSON or not the expected shape
        └── AIInvalidAnswerError  the answer: not a chat completion, not JSON, not the shape
                                  (a model's garbage; the caller may ask again)

``str(error)`` is a short reason fit for a job's ``error_message``; it never holds the API key.
"""

from __future__ import annotations

__all__ = ("AIError", "AIInvalidAnswerError", "AIPermanentError", "AITransientError")


class AIError(Exception):
    """Raised when the AI API did not give usable recommendations."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class AITransientError(AIError):
    """Raised when the AI API timed out, was unreachable, rate-limited us or failed with a 5xx."""

    def __init__(
        self, reason: str, *, retry_after: float | None = None, timeout: bool = False, status: int | None = None
    ) -> None:
        super().__init__(reason)
        #: Seconds the API asked us to wait (``Retry-After``), if it said.
        self.retry_after = retry_after
        #: The HTTP status the API answered with (``429``, a 5xx), if it answered at all.
        self.status = status
        #: True when no answer came in time (recorded as outcome ``timeout``, not ``error``).
        self.timeout = timeout


class AIPermanentError(AIError):
    """Raised when the AI API refused the request (4xx) or answered something we cannot use."""


class AIInvalidAnswerError(AIPermanentError):
    """Raised when the AI API answered, but with something we cannot use (not a chat completion,
    not JSON, not the expected shape): the request was fine, so asking again may help."""
