"""Password hashes, signed cookie values and tokens: the dashboard's few cryptographic pieces.

Passwords are argon2id hashes (argon2-cffi), verified in constant time by the library; the
``ADMIN_PASSWORD`` of the environment is compared with :func:`hmac.compare_digest` on digests
(so neither its length nor its content leaks through timing). Cookie values are
``<random id>.<HMAC-SHA256>`` signed with ``SECRET_KEY``.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from functools import cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

__all__ = (
    "check_password",
    "digest",
    "hash_password",
    "new_token",
    "secrets_equal",
    "sign",
    "unsign",
)


@cache
def _hasher() -> PasswordHasher:
    return PasswordHasher()


@cache
def _dummy_hash() -> str:
    return _hasher().hash(secrets.token_urlsafe(16))


def hash_password(password: str) -> str:
    """An argon2id hash of ``password`` (salted; parameters of argon2-cffi's RFC 9106 profile)."""
    return _hasher().hash(password)


def check_password(password_hash: str | None, password: str) -> bool:
    """Whether ``password`` matches the hash; ``None`` (no such user) costs as much as a mismatch."""
    try:
        return _hasher().verify(password_hash or _dummy_hash(), password) and password_hash is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def secrets_equal(given: str, expected: str) -> bool:
    """Constant-time comparison of two secrets of any lengths (``False`` when ``expected`` is empty)."""
    same = hmac.compare_digest(digest(given), digest(expected))
    return same and bool(expected)


def digest(value: str) -> str:
    """SHA-256 hex digest (stored instead of session ids)."""
    return hashlib.sha256(value.encode()).hexdigest()


def new_token() -> str:
    """A random URL-safe token of 256 bits."""
    return secrets.token_urlsafe(32)


def _mac(key: str, value: str) -> str:
    return hmac.new(key.encode(), value.encode(), hashlib.sha256).hexdigest()


def sign(value: str, key: str) -> str:
    """``value`` with its HMAC, for a cookie."""
    return f"{value}.{_mac(key, value)}"


def unsign(signed: str | None, key: str) -> str | None:
    """The value of a signed cookie, or ``None`` when absent or tampered with."""
    if not signed or "." not in signed:
        return None
    value, _, mac = signed.rpartition(".")
    return value if hmac.compare_digest(mac, _mac(key, value)) else None
