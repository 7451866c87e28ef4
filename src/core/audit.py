"""The audit log: one row per operator action (dashboard, CLI or scheduler), never updated.

It lives in ``core`` because every package that changes data on an operator's behalf writes to
it: the dashboard (``admin``), the CLI (``server``) and the scheduler's cleanup (``jobs``).
:func:`record` adds the row to the caller's session, so the entry commits or rolls back with the
change it describes.
"""

from __future__ import annotations

from typing import Any

from advanced_alchemy.base import BigIntAuditBase
from advanced_alchemy.types import JsonB
from sqlalchemy import Index, Integer, String
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

__all__ = ("AuditEntry", "record")


class AuditEntry(BigIntAuditBase):
    """Who did what to which jobs (ids or the filter used), how many, and when (``created_at``)."""

    __tablename__ = "audit_log"
    __table_args__ = (
        Index("ix_audit_log_created_at", "created_at"),
        Index("ix_audit_log_action_created_at", "action", "created_at"),
    )

    #: The user name, ``cli:<os user>`` or ``scheduler``.
    actor: Mapped[str] = mapped_column(String(128))
    #: A dotted verb such as ``jobs.retry``, ``jobs.delete``, ``cleanup.run``, ``login.failed``.
    action: Mapped[str] = mapped_column(String(64))
    #: The job ids (``{"job_ids": [...]}``) or the filter (``{"filter": {...}}``) acted on.
    target: Mapped[dict[str, Any] | None] = mapped_column(JsonB, default=None)
    #: How many rows the action changed.
    count: Mapped[int | None] = mapped_column(Integer, default=None)
    #: Anything else worth keeping (cutoff of a cleanup, the reason, the request id …).
    detail: Mapped[dict[str, Any] | None] = mapped_column(JsonB, default=None)


async def record(
    session: AsyncSession,
    *,
    actor: str,
    action: str,
    target: dict[str, Any] | None = None,
    count: int | None = None,
    detail: dict[str, Any] | None = None,
) -> AuditEntry:
    """Add one audit entry to ``session`` (committed with the caller's transaction) and return it."""
    entry = AuditEntry(actor=actor[:128], action=action[:64], target=target, count=count, detail=detail)
    session.add(entry)
    await session.flush()
    return entry
