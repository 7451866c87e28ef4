"""API tokens: create (shown once, stored as a digest), list, revoke, and check one per request.

A token reads ``exm_<key_id>_<secret>``: 48 random bits of ``key_id`` find the row through a
unique index, 256 random bits of secret prove the holder. Only the secret's SHA-256 is stored
(a fast hash is enough for a random 256-bit secret: there is nothing to guess), and it is
compared with :func:`hmac.compare_digest`.
"""

from __future__ import annotations

import hmac
import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from access.models import MAX_TOKEN_NAME, ApiToken
from access.principal import SCOPES, SUBMIT
from core.db import Database
from core.signing import digest

__all__ = (
    "DEFAULT_SCOPES",
    "TOKEN_PREFIX",
    "TokenError",
    "TokenExistsError",
    "TokenHolder",
    "authenticate_token",
    "check_name",
    "create_token",
    "list_tokens",
    "revoke_token",
)

TOKEN_PREFIX = "exm"  # noqa: S105  (a prefix, not a secret)
DEFAULT_SCOPES = (SUBMIT,)
#: ``last_used_at`` is written at most this often per token (a poll every 2 s must not write).
LAST_USED_EVERY = timedelta(seconds=60)
_KEY_ID = re.compile(r"^[0-9a-f]{12}$")
_NAME = re.compile(rf"^[A-Za-z0-9][A-Za-z0-9._-]{{0,{MAX_TOKEN_NAME - 1}}}$")
_DUMMY_HASH = digest("no such token")


class TokenError(ValueError):
    """Raised when a token cannot be created or revoked as asked (the message says why)."""


class TokenExistsError(TokenError):
    """Raised when a token of that name exists already (revoked ones included)."""


@dataclass(frozen=True)
class TokenHolder:
    """Who a valid token belongs to."""

    name: str
    scopes: frozenset[str]


def _utcnow() -> datetime:
    return datetime.now(UTC)


def check_name(name: str) -> str:
    """The token name, or :class:`TokenError`: letters, digits, ``.``, ``_``, ``-``, at most 64."""
    if not _NAME.match(name):
        msg = (
            f"a token name is 1 to {MAX_TOKEN_NAME} letters, digits, '.', '_' or '-', "
            f"starting with a letter or digit; got {name[:80]!r}"
        )
        raise TokenError(msg)
    return name


def _scopes(scopes: Iterable[str]) -> list[str]:
    chosen = set(scopes) or set(DEFAULT_SCOPES)
    unknown = chosen - set(SCOPES)
    if unknown:
        msg = f"unknown scope(s) {', '.join(sorted(unknown))}: choose from {', '.join(SCOPES)}"
        raise TokenError(msg)
    return [scope for scope in SCOPES if scope in chosen]


async def create_token(session: AsyncSession, name: str, scopes: Iterable[str] = ()) -> tuple[ApiToken, str]:
    """Add a token (in the caller's transaction); return its row and the token, shown this once.

    No scopes means ``submit``. Raises :class:`TokenExistsError` when the name is taken.
    """
    check_name(name)
    granted = _scopes(scopes)
    if await session.scalar(sa.select(ApiToken.id).where(ApiToken.name == name)) is not None:
        msg = f"a token named {name!r} exists already (names are never reused, revoked tokens included)"
        raise TokenExistsError(msg)
    key_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
    row = ApiToken(name=name, key_id=key_id, secret_hash=digest(secret), scopes=granted)
    session.add(row)
    try:
        await session.flush()
    except IntegrityError:  # created by someone else meanwhile
        msg = f"a token named {name!r} exists already"
        raise TokenExistsError(msg) from None
    return row, f"{TOKEN_PREFIX}_{key_id}_{secret}"


async def list_tokens(session: AsyncSession) -> Sequence[ApiToken]:
    """Every token, oldest first (revoked ones too)."""
    return (await session.scalars(sa.select(ApiToken).order_by(ApiToken.created_at, ApiToken.id))).all()


async def revoke_token(session: AsyncSession, name: str) -> tuple[ApiToken, bool] | None:
    """Revoke the token ``name``; ``None`` when there is none. Returns it and whether it was
    revoked now (``False``: it already was)."""
    row = await session.scalar(sa.select(ApiToken).where(ApiToken.name == name))
    if row is None:
        return None
    if row.revoked_at is not None:
        return row, False
    row.revoked_at = _utcnow()
    return row, True


def _split(token: str) -> tuple[str, str] | None:
    prefix, _, rest = token.partition("_")
    key_id, _, secret = rest.partition("_")
    if prefix != TOKEN_PREFIX or not _KEY_ID.match(key_id) or not secret:
        return None
    return key_id, secret


async def authenticate_token(database: Database, token: str) -> TokenHolder | None:
    """The holder of ``token``; ``None`` when it is malformed, unknown or revoked.

    One indexed read on the autocommit reader; ``last_used_at`` is written when older than a
    minute.
    """
    parts = _split(token)
    row = None
    if parts is not None:
        query = sa.select(
            ApiToken.id,
            ApiToken.name,
            ApiToken.secret_hash,
            ApiToken.scopes,
            ApiToken.revoked_at,
            ApiToken.last_used_at,
        ).where(ApiToken.key_id == parts[0])
        async with database.reader.connect() as connection:
            row = (await connection.execute(query)).first()
    # Compared even when there is no row, so an unknown key id costs what a wrong secret does.
    matches = hmac.compare_digest(
        row.secret_hash if row is not None else _DUMMY_HASH, digest(parts[1] if parts else "")
    )
    if row is None or not matches or row.revoked_at is not None:
        return None
    now = _utcnow()
    if row.last_used_at is None or now - row.last_used_at > LAST_USED_EVERY:
        stale = sa.or_(ApiToken.last_used_at.is_(None), ApiToken.last_used_at < now - LAST_USED_EVERY)
        async with database.reader.connect() as connection:
            await connection.execute(sa.update(ApiToken).where(ApiToken.id == row.id, stale).values(last_used_at=now))
    return TokenHolder(name=row.name, scopes=frozenset(row.scopes))
