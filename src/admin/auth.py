"""Dashboard users, logins and sessions.

``ADMIN_USERNAME``/``ADMIN_PASSWORD`` is an operator (never stored); ``exams admin create-user``
adds users with an argon2 hash and a role. Repeated wrong passwords for a user name (known or
not, so the answer never tells which names exist) slow the answers down and, after
:data:`MAX_FAILURES`, lock the name for :data:`LOCK_MINUTES`. A login creates a new session row
(a fresh random id: a cookie set before the login is worthless after it) with its own CSRF token.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from admin.models import ROLES, AdminSession, AdminUser, LoginThrottle
from admin.security import check_password, digest, hash_password, new_token, secrets_equal
from core.audit import record
from core.settings import Settings
from jobs.models import utcnow

__all__ = (
    "LOCK_MINUTES",
    "MAX_FAILURES",
    "Identity",
    "LoginResult",
    "UserExistsError",
    "authenticate",
    "create_user",
    "end_session",
    "load_session",
    "start_session",
)

MAX_FAILURES = 5
LOCK_MINUTES = 15
#: Extra wait per consecutive failure (capped), so guessing is slow even before the lock.
SLOWDOWN_SECONDS = 0.1
MAX_SLOWDOWN_SECONDS = 1.0
_USERNAME_MAX = 64


class UserExistsError(ValueError):
    """Raised when ``create-user`` is given a name that is taken (or is ``ADMIN_USERNAME``)."""


@dataclass(frozen=True)
class Identity:
    """Who a session belongs to."""

    username: str
    role: str
    csrf_token: str
    expires_at: datetime

    @property
    def is_operator(self) -> bool:
        """Whether this user may change jobs and run the cleanup."""
        return self.role == "operator"


@dataclass(frozen=True)
class LoginResult:
    """The outcome of a login attempt: a role, or why not."""

    role: str | None
    locked_until: datetime | None = None


def _key(username: str) -> str:
    return username.strip().lower()[:_USERNAME_MAX]


async def _throttle(session: AsyncSession, username: str) -> LoginThrottle:
    row = (await session.execute(select(LoginThrottle).where(LoginThrottle.username == username))).scalar_one_or_none()
    if row is None:
        row = LoginThrottle(username=username, failures=0)
        session.add(row)
    return row


async def authenticate(session: AsyncSession, settings: Settings, username: str, password: str) -> LoginResult:
    """Check a user name and password (caller commits); wrong attempts are counted and slowed down."""
    now = utcnow()
    key = _key(username)
    throttle = await _throttle(session, key)
    if throttle.locked_until is not None and throttle.locked_until > now:
        return LoginResult(None, throttle.locked_until)
    user = (await session.execute(select(AdminUser).where(AdminUser.username == key))).scalar_one_or_none()
    # Both checks always run, so the time taken does not tell which names exist.
    env_ok = secrets_equal(key, _key(settings.admin_username)) & secrets_equal(password, settings.admin_password)
    stored_ok = check_password(user.password_hash if user is not None else None, password)
    role: str | None = "operator" if env_ok else (user.role if user is not None and stored_ok else None)
    if role is not None:
        throttle.failures = 0
        throttle.locked_until = None
        if user is not None and not env_ok:
            user.last_login_at = now
        return LoginResult(role)
    throttle.failures += 1
    if throttle.failures >= MAX_FAILURES:
        throttle.locked_until = now + timedelta(minutes=LOCK_MINUTES)
        throttle.failures = 0
        await record(
            session,
            actor=key or "(empty)",
            action="login.locked",
            detail={"minutes": LOCK_MINUTES, "after_failures": MAX_FAILURES},
        )
        await session.flush()
        return LoginResult(None, throttle.locked_until)
    await session.flush()
    await asyncio.sleep(min(SLOWDOWN_SECONDS * throttle.failures, MAX_SLOWDOWN_SECONDS))
    return LoginResult(None)


async def start_session(session: AsyncSession, settings: Settings, username: str, role: str) -> str:
    """Create a session (a new random id) and return that id for the cookie; old expired ones go."""
    now = utcnow()
    await session.execute(delete(AdminSession).where(AdminSession.expires_at < now))
    token = new_token()
    session.add(
        AdminSession(
            token_hash=digest(token),
            username=_key(username),
            role=role,
            csrf_token=new_token(),
            expires_at=now + timedelta(minutes=settings.admin_session_minutes),
            last_seen_at=now,
        )
    )
    await session.flush()
    return token


async def load_session(session: AsyncSession, token: str) -> Identity | None:
    """The identity of a live session id, or ``None`` (unknown or expired)."""
    row = (
        await session.execute(select(AdminSession).where(AdminSession.token_hash == digest(token)))
    ).scalar_one_or_none()
    if row is None:
        return None
    expires_at = row.expires_at
    if expires_at <= utcnow():
        await session.delete(row)
        return None
    return Identity(row.username, row.role, row.csrf_token, expires_at)


async def end_session(session: AsyncSession, token: str) -> None:
    """Log out: the session id stops working everywhere at once."""
    await session.execute(delete(AdminSession).where(AdminSession.token_hash == digest(token)))


async def create_user(session: AsyncSession, settings: Settings, username: str, role: str, password: str) -> AdminUser:
    """Add a dashboard user (caller commits)."""
    key = _key(username)
    if role not in ROLES:
        msg = f"role must be one of {', '.join(ROLES)}"
        raise ValueError(msg)
    if not key or len(username.strip()) > _USERNAME_MAX or any(c.isspace() for c in key):
        msg = f"the user name must be 1 to {_USERNAME_MAX} characters without spaces"
        raise ValueError(msg)
    if len(password) < 8:
        msg = "the password must be at least 8 characters long"
        raise ValueError(msg)
    taken = (await session.execute(select(AdminUser.id).where(AdminUser.username == key))).first() is not None
    if taken or key == _key(settings.admin_username):
        msg = f"a user named {key!r} already exists"
        raise UserExistsError(msg)
    user = AdminUser(username=key, password_hash=hash_password(password), role=role)
    session.add(user)
    await session.flush()
    return user
