"""Random tokens, digests, constant-time comparison and HMAC-signed values.

Shared by the dashboard (``admin``: session cookies, CSRF tokens) and the API's access control
(``access``: API tokens stored as digests, the student page's signed tokens). Signed values are
``<value>.<HMAC-SHA256 hex>``; the value itself must not need hiding, only protecting.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

__all__ = ("digest", "new_token", "secrets_equal", "sign", "unsign")


def secrets_equal(given: str, expected: str) -> bool:
    """Constant-time comparison of two secrets of any lengths (``False`` when ``expected`` is empty)."""
    same = hmac.compare_digest(digest(given), digest(expected))
    return same and bool(expected)


def digest(value: str) -> str:
    """SHA-256 hex digest (stored instead of session ids and API tokens)."""
    return hashlib.sha256(value.encode()).hexdigest()


def new_token() -> str:
    """A random URL-safe token of 256 bits."""
    return secrets.token_urlsafe(32)


def _mac(key: str, value: str) -> str:
    return hmac.new(key.encode(), value.encode(), hashlib.sha256).hexdigest()


def sign(value: str, key: str) -> str:
    """``value`` with its HMAC under ``key``."""
    return f"{value}.{_mac(key, value)}"


def unsign(signed: str | None, key: str) -> str | None:
    """The value of a signed string, or ``None`` when absent or tampered with."""
    if not signed or "." not in signed:
        return None
    value, _, mac = signed.rpartition(".")
    return value if hmac.compare_digest(mac, _mac(key, value)) else None
