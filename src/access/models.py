"""The tables of API access: the API tokens, and the submit rate limit's counters.

Migration 0006 creates them (with the ``owner`` columns of ``exam_processing_jobs`` and
``exam_results``).
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from advanced_alchemy.base import BigIntAuditBase, orm_registry
from advanced_alchemy.types import DateTimeUTC, JsonB
from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

__all__ = ("API_RATE_LIMITS", "MAX_TOKEN_NAME", "ApiToken")

MAX_TOKEN_NAME = 64


class ApiToken(BigIntAuditBase):
    """One API token (``exams tokens create``); the token itself is never stored.

    A token reads ``exm_<key_id>_<secret>``: ``key_id`` finds the row, and the SHA-256 of the
    secret is compared with ``secret_hash`` in constant time. A revoked token stays listed, so
    its name (the owner of what it submitted) is never given to another token.
    """

    __tablename__ = "api_tokens"

    name: Mapped[str] = mapped_column(String(MAX_TOKEN_NAME), unique=True)
    key_id: Mapped[str] = mapped_column(String(16), unique=True)
    #: SHA-256 hex of the token's secret part.
    secret_hash: Mapped[str] = mapped_column(String(64))
    #: ``submit`` and/or ``read_all`` (``access.principal.SCOPES``).
    scopes: Mapped[list[str]] = mapped_column(JsonB)
    #: When the token last authenticated a request (written at most once a minute).
    last_used_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), default=None)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True), default=None)


#: ``SUBMIT_RATE_LIMIT``'s counters when they are kept in the database: one row per token or
#: client address, counting the submissions of its current window (``window_index``: the epoch
#: time divided by the period). One atomic upsert per submission (``access.rate_limit``).
API_RATE_LIMITS = sa.Table(
    "api_rate_limits",
    orm_registry.metadata,
    sa.Column("key", sa.String(128), primary_key=True),
    sa.Column("window_index", sa.BigInteger, nullable=False),
    sa.Column("hits", sa.Integer, nullable=False),
)
