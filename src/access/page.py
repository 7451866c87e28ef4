"""The student page's own credentials with ``API_AUTH=tokens``: a page session and its tokens.

The page is rendered with a self-contained token, ``page.<session id>.<expiry>.<HMAC>``, signed
with a key derived from ``SECRET_KEY``; its script sends it as ``Authorization: Bearer …``. Jobs
submitted with it are owned by the page session (``page:<session id>``), so the page reads back
its own jobs and nobody else's.

The session id lives in an HTTP-only cookie of the browser session (signed too), so reloading
the page, or switching its language, renders a fresh token for the same session and the page
can resume the job it was following. Nothing is stored on the server.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from core.signing import sign, unsign

__all__ = (
    "PAGE_COOKIE",
    "PAGE_TOKEN_PREFIX",
    "PAGE_TOKEN_SECONDS",
    "cookie_value",
    "is_page_token",
    "issue_page_token",
    "new_session_id",
    "read_cookie",
    "read_page_token",
)

PAGE_TOKEN_PREFIX = "page"  # noqa: S105  (a prefix, not a secret)
#: How long one rendered page's token is good for.
PAGE_TOKEN_SECONDS = 12 * 3600
PAGE_COOKIE = "exams_page"
_SESSION_ID_BYTES = 16


def _key(secret_key: str, purpose: str) -> str:
    """A key for one purpose, so a page token, a page cookie and the dashboard's cookies never
    verify as one another."""
    return hmac.new(secret_key.encode(), f"exams {purpose}".encode(), hashlib.sha256).hexdigest()


def new_session_id() -> str:
    """A random page-session id (128 bits, URL-safe, no dots)."""
    return secrets.token_urlsafe(_SESSION_ID_BYTES)


def _plain(session_id: str) -> bool:
    return bool(session_id) and session_id.replace("-", "").replace("_", "").isalnum()


def issue_page_token(secret_key: str, session_id: str, now: float) -> str:
    """A token for ``session_id``, good for :data:`PAGE_TOKEN_SECONDS` from ``now`` (epoch seconds)."""
    expires = int(now) + PAGE_TOKEN_SECONDS
    return sign(f"{PAGE_TOKEN_PREFIX}.{session_id}.{expires}", _key(secret_key, "page token"))


def is_page_token(token: str) -> bool:
    """Whether ``token`` has the page token's shape (it may still be forged or expired)."""
    return token.startswith(f"{PAGE_TOKEN_PREFIX}.")


def read_page_token(secret_key: str, token: str, now: float) -> str | None:
    """The page-session id of a genuine, unexpired token; ``None`` otherwise."""
    value = unsign(token, _key(secret_key, "page token"))
    if value is None:
        return None
    prefix, session_id, expires = [*value.split("."), "", "", ""][:3]
    if prefix != PAGE_TOKEN_PREFIX or not _plain(session_id) or not expires.isdigit() or int(expires) <= now:
        return None
    return session_id


def cookie_value(secret_key: str, session_id: str) -> str:
    """The page cookie carrying ``session_id``."""
    return sign(session_id, _key(secret_key, "page cookie"))


def read_cookie(secret_key: str, value: str | None) -> str | None:
    """The page-session id of a genuine cookie; ``None`` otherwise."""
    session_id = unsign(value, _key(secret_key, "page cookie"))
    return session_id if session_id is not None and _plain(session_id) else None
