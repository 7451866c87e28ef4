"""API access: tokens, the submit rate limit's counters, and who submitted each job and result

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01

- ``api_tokens``: one row per API token (``exams tokens create``): its name, the key id that
  finds it, the SHA-256 of its secret (never the token), its scopes, when it was last used and
  revoked;
- ``api_rate_limits``: ``SUBMIT_RATE_LIMIT``'s counters when they live in the database (one row
  per token or client address: the current window and its count);
- ``owner`` on ``exam_processing_jobs`` and ``exam_results`` (``token:<name>`` or
  ``page:<session id>``; empty for what was submitted with ``API_AUTH=off``, as every existing
  row was), with the index a token's own results are listed by.

See ``access`` (``models``, ``tokens``, ``rate_limit``).
"""

from __future__ import annotations

import sqlalchemy as sa
from advanced_alchemy.types import DateTimeUTC, JsonB
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_BIGINT = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "api_tokens",
        sa.Column("id", _BIGINT, nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("key_id", sa.String(16), nullable=False),
        sa.Column("secret_hash", sa.String(64), nullable=False),
        sa.Column("scopes", JsonB, nullable=False),
        sa.Column("last_used_at", DateTimeUTC(timezone=True), nullable=True),
        sa.Column("revoked_at", DateTimeUTC(timezone=True), nullable=True),
        sa.Column("created_at", DateTimeUTC(timezone=True), nullable=False),
        sa.Column("updated_at", DateTimeUTC(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_tokens")),
        sa.UniqueConstraint("key_id", name=op.f("uq_api_tokens_key_id")),
        sa.UniqueConstraint("name", name=op.f("uq_api_tokens_name")),
    )
    op.create_table(
        "api_rate_limits",
        sa.Column("key", sa.String(128), nullable=False),
        sa.Column("window_index", sa.BigInteger(), nullable=False),
        sa.Column("hits", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_api_rate_limits")),
    )
    with op.batch_alter_table("exam_processing_jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("owner", sa.String(80), nullable=True))
    with op.batch_alter_table("exam_results", schema=None) as batch_op:
        batch_op.add_column(sa.Column("owner", sa.String(80), nullable=True))
        batch_op.create_index("ix_exam_results_owner_graded_at_id", ["owner", "graded_at", "id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("exam_results", schema=None) as batch_op:
        batch_op.drop_index("ix_exam_results_owner_graded_at_id")
        batch_op.drop_column("owner")
    with op.batch_alter_table("exam_processing_jobs", schema=None) as batch_op:
        batch_op.drop_column("owner")
    op.drop_table("api_rate_limits")
    op.drop_table("api_tokens")
