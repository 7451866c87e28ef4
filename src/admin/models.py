"""The dashboard's tables: its users, their sessions, and the failed-login counters.

Sessions live in the database (the cookie carries a signed random id), so a logout or an expiry
ends a session in every web process at once, and a login always starts a new id.
"""

from __future__ import annotations

from datetime import datetime

from advanced_alchemy.base import BigIntAuditBase
from advanced_alchemy.types import DateTimeUTC
from sqlalchemy import CheckConstraint, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

__all__ = ("ROLES", "AdminSession", "AdminUser", "LoginThrottle")

ROLES = ("viewer", "operator")


class AdminUser(BigIntAuditBase):
    """A dashboard user added with ``exams admin create-user`` (``ADMIN_USERNAME`` is not stored)."""

    __tablename__ = "admin_users"
    __table_args__ = (CheckConstraint("role IN ('viewer', 'operator')", name="role"),)

    username: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    #: An argon2id hash (``$argon2id$…``), never the password.
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16))
    last_login_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), default=None)


class AdminSession(BigIntAuditBase):
    """One signed-in browser: the hash of its session id, who it is and its CSRF token."""

    __tablename__ = "admin_sessions"

    #: SHA-256 of the random session id (a database leak gives no usable cookie).
    token_hash: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    username: Mapped[str] = mapped_column(String(64))
    role: Mapped[str] = mapped_column(String(16))
    csrf_token: Mapped[str] = mapped_column(String(64))
    #: Absolute end of the session (not extended by activity).
    expires_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True), index=True)
    last_seen_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True))


class LoginThrottle(BigIntAuditBase):
    """Consecutive wrong passwords for one user name (known or not), and until when it is locked."""

    __tablename__ = "admin_login_throttle"

    username: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), default=None)
