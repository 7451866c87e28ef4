"""Password hashes, signed cookie values and tokens: the dashboard's few cryptographic pieces.

Passwords are argon2id hashes (argon2-cffi), verified in constant time by the library; the
``ADMIN_PASSWORD`` of the environment is compared with :func:`hmac.compare_digest` on digests
(so neither its length nor its content leaks through timing). Cookie values are
``<random id>.<HMAC-SHA256>`` signed with ``SECRET_KEY``. The digests, tokens and signatures
are :mod:`core.signing`'s (the API's access control signs with them too), re-exported here.
"""

from __future__ import annotations

import secrets
from functools import cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from core.signing import digest, new_token, secrets_equal, sign, unsign

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
