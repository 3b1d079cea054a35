"""quotas policies approvals usage lockdown

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "cohort_policies",
        sa.Column("cohort", sa.String(length=64), nullable=False),
        sa.Column("policy", sa.JSON(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(length=200), nullable=False),
        sa.PrimaryKeyConstraint("cohort"),
    )
    op.create_table(
        "program_state",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("lockdown", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("lockdown_reason", sa.Text(), nullable=True),
        sa.Column("lockdown_by", sa.String(length=200), nullable=True),
        sa.Column("lockdown_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "quota_usage",
        sa.Column("tester_id", sa.String(length=32), nullable=False),
        sa.Column("metric", sa.String(length=32), nullable=False),
        sa.Column("period", sa.String(length=16), nullable=False),
        sa.Column("used", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("tester_id", "metric", "period"),
    )
    op.create_table(
        "usage_events",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("request_id", sa.String(length=40), nullable=False),
        sa.Column("key_id", sa.String(length=32), nullable=True),
        sa.Column("tester_id", sa.String(length=32), nullable=True),
        sa.Column("cohort", sa.String(length=64), nullable=True),
        sa.Column("method", sa.String(length=8), nullable=False),
        sa.Column("route", sa.String(length=64), nullable=False),
        sa.Column("video_id", sa.String(length=128), nullable=True),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("error_code", sa.String(length=64), nullable=True),
        sa.Column("generations", sa.Integer(), nullable=False),
        sa.Column("video_seconds", sa.Integer(), nullable=False),
        sa.Column("latency_ms", sa.Double(), nullable=True),
        sa.Column("upstream_latency_ms", sa.Double(), nullable=True),
        sa.Column("client_ip", sa.String(length=64), nullable=True),
        sa.Column("user_agent", sa.String(length=300), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("request_id"),
    )
    with op.batch_alter_table("usage_events", schema=None) as batch_op:
        batch_op.create_index("ix_usage_at", ["at"], unique=False)
        batch_op.create_index("ix_usage_key_at", ["key_id", "at"], unique=False)
        batch_op.create_index("ix_usage_tester_at", ["tester_id", "at"], unique=False)

    op.create_table(
        "approvals",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("tester_id", sa.String(length=32), nullable=False),
        sa.Column("key_id", sa.String(length=32), nullable=False),
        sa.Column("video_id", sa.String(length=128), nullable=False),
        sa.Column("held_because", sa.Text(), nullable=False),
        sa.Column("request", sa.JSON(), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=True),
        sa.Column("content_type", sa.String(length=200), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("decided_by", sa.String(length=200), nullable=True),
        sa.Column("decision_reason", sa.Text(), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["tester_id"],
            ["testers.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("approvals", schema=None) as batch_op:
        batch_op.create_index("ix_approvals_status_created", ["status", "created_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_approvals_tester_id"), ["tester_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_approvals_video_id"), ["video_id"], unique=False)

    op.create_table(
        "policy_overrides",
        sa.Column("tester_id", sa.String(length=32), nullable=False),
        sa.Column("overrides", sa.JSON(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(length=200), nullable=False),
        sa.ForeignKeyConstraint(
            ["tester_id"],
            ["testers.id"],
        ),
        sa.PrimaryKeyConstraint("tester_id"),
    )
    with op.batch_alter_table("videos", schema=None) as batch_op:
        batch_op.add_column(sa.Column("upstream_id", sa.String(length=128), nullable=True))
        batch_op.add_column(
            sa.Column("video_seconds", sa.Integer(), nullable=False, server_default="0")
        )
        batch_op.add_column(
            sa.Column("quota_periods", sa.JSON(), nullable=False, server_default="{}")
        )
        batch_op.add_column(
            sa.Column("quota_state", sa.String(length=16), nullable=False, server_default="none")
        )
        batch_op.create_unique_constraint("uq_videos_upstream_id", ["upstream_id"])
    # Videos created before held generations existed have the backend's id as their own.
    op.execute("UPDATE videos SET upstream_id = id WHERE upstream_id IS NULL")


def downgrade() -> None:
    with op.batch_alter_table("videos", schema=None) as batch_op:
        batch_op.drop_constraint("uq_videos_upstream_id", type_="unique")
        batch_op.drop_column("quota_state")
        batch_op.drop_column("quota_periods")
        batch_op.drop_column("video_seconds")
        batch_op.drop_column("upstream_id")

    op.drop_table("policy_overrides")
    with op.batch_alter_table("approvals", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_approvals_video_id"))
        batch_op.drop_index(batch_op.f("ix_approvals_tester_id"))
        batch_op.drop_index("ix_approvals_status_created")

    op.drop_table("approvals")
    with op.batch_alter_table("usage_events", schema=None) as batch_op:
        batch_op.drop_index("ix_usage_tester_at")
        batch_op.drop_index("ix_usage_key_at")
        batch_op.drop_index("ix_usage_at")

    op.drop_table("usage_events")
    op.drop_table("quota_usage")
    op.drop_table("program_state")
    op.drop_table("cohort_policies")
