"""The one retry policy: what is transient, how long to wait before the next try.

Every retry loop of the product (a job step, the actor waiting for the database, saving a paid
AI answer through a database blip) asks these two questions here, so that they are answered the
same way everywhere. How many times is the caller's setting (``JOB_MAX_RETRIES`` for jobs).
"""

from __future__ import annotations

import random

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

__all__ = ("TRANSIENT_DATABASE_ERRORS", "backoff_seconds", "is_connection_problem")

#: Errors of a database that is away (restarting, unreachable, pool exhausted): try again later.
TRANSIENT_DATABASE_ERRORS: tuple[type[BaseException], ...] = (
    OperationalError,
    InterfaceError,
    DBAPIError,
    PoolTimeoutError,
    ConnectionError,
    OSError,
)


def is_connection_problem(exc: BaseException) -> bool:
    """Whether ``exc`` says the database could not be reached (rather than refusing a statement).

    A web request maps the first to ``503`` and the second to ``500``: a statement the database
    refuses is a bug, not an outage.
    """
    if isinstance(exc, OperationalError | InterfaceError | PoolTimeoutError | ConnectionError | OSError):
        return True
    if isinstance(exc, DBAPIError):
        return bool(exc.connection_invalidated) or isinstance(exc.orig, ConnectionError | OSError)
    return False


def backoff_seconds(
    attempt: int, *, base: float, cap: float, jitter: bool = True, at_least: float | None = None
) -> float:
    """Seconds to wait before try number ``attempt + 1``: ``base`` doubled per earlier try, capped.

    ``attempt`` counts the tries made so far (1 after the first). Jitter stretches the wait by up to
    half, so that jobs failing together do not retry together; ``at_least`` is a server's
    ``Retry-After``, which is always honoured.
    """
    delay = min(base * 2 ** max(attempt - 1, 0), cap)
    if jitter:
        delay *= random.uniform(1.0, 1.5)
    return float(max(delay, at_least or 0.0))
