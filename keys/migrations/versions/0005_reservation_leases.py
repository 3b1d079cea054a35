"""reservation leases

One row per creation in flight: its quota reservation, a lease, and what was sent upstream,
so a reconciler can settle or refund a reservation whose worker died
(keys/generations/reconcile.py).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "reservations",
        sa.Column("request_id", sa.String(length=40), nullable=False),
        sa.Column("tester_id", sa.String(length=32), nullable=False),
        sa.Column("key_id", sa.String(length=32), nullable=False),
        sa.Column("video_id", sa.String(length=128), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=False),
        sa.Column("claimed_by", sa.String(length=40), nullable=True),
        sa.Column("generations", sa.Integer(), nullable=False),
        sa.Column("video_seconds", sa.Integer(), nullable=False),
        sa.Column("quota_periods", sa.JSON(), nullable=False),
        sa.Column("intent", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("request_id"),
    )
    with op.batch_alter_table("reservations", schema=None) as batch_op:
        batch_op.create_index("ix_reservations_lease_until", ["lease_until"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("reservations", schema=None) as batch_op:
        batch_op.drop_index("ix_reservations_lease_until")
    op.drop_table("reservations")
