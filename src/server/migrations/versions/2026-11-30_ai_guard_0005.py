"""the AI guard's shared state (limits, 429 pause, circuit breaker) when the broker is RabbitMQ

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30

- ``ai_guard_state``: one row (``ai``): until when a ``429`` pauses every AI call, the circuit
  breaker's consecutive failures, until when it is open and until when its trial call runs;
- ``ai_guard_calls``: one row per AI call in flight (its lease) or started in the last minute.

Times are epoch milliseconds. See ``jobs.ai_guard.SqlAIGuard``.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    state = op.create_table(
        "ai_guard_state",
        sa.Column("name", sa.String(32), nullable=False),
        sa.Column("paused_until", sa.BigInteger(), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("open_until", sa.BigInteger(), nullable=False),
        sa.Column("trial_until", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_ai_guard_state")),
    )
    op.bulk_insert(state, [{"name": "ai", "paused_until": 0, "failures": 0, "open_until": 0, "trial_until": 0}])
    op.create_table(
        "ai_guard_calls",
        sa.Column("token", sa.String(32), nullable=False),
        sa.Column("started_at", sa.BigInteger(), nullable=False),
        sa.Column("lease_until", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("token", name=op.f("pk_ai_guard_calls")),
    )


def downgrade() -> None:
    op.drop_table("ai_guard_calls")
    op.drop_table("ai_guard_state")
