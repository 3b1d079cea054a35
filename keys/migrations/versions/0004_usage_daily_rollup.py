"""usage daily rollup

Per-day, per-tester totals of usage_events (kept in step by keys/records/usage.py), backfilled here
from the events already stored; and an index for counting approval decisions per day.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

# The same rules as keys/records/usage.py's tally: refunded generations are not counted; 4xx and
# refused requests are rejections; 5xx are failures. Days are UTC.
_BACKFILL = """
INSERT INTO usage_daily
    (day, tester_id, cohort, requests, generations, video_seconds, rejections, failures)
SELECT {day}, COALESCE(tester_id, ''), COALESCE(cohort, ''), COUNT(*),
       SUM(CASE WHEN outcome = 'refunded' THEN 0 ELSE generations END),
       SUM(CASE WHEN outcome = 'refunded' THEN 0 ELSE video_seconds END),
       SUM(CASE WHEN (status >= 400 AND status < 500) OR outcome = 'refused' THEN 1 ELSE 0 END),
       SUM(CASE WHEN status >= 500 THEN 1 ELSE 0 END)
FROM usage_events
GROUP BY {day}, COALESCE(tester_id, ''), COALESCE(cohort, '')
"""


def upgrade() -> None:
    op.create_table(
        "usage_daily",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("tester_id", sa.String(length=32), nullable=False),
        sa.Column("cohort", sa.String(length=64), nullable=False),
        sa.Column("requests", sa.BigInteger(), nullable=False),
        sa.Column("generations", sa.BigInteger(), nullable=False),
        sa.Column("video_seconds", sa.BigInteger(), nullable=False),
        sa.Column("rejections", sa.BigInteger(), nullable=False),
        sa.Column("failures", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("day", "tester_id", "cohort"),
    )
    with op.batch_alter_table("approvals", schema=None) as batch_op:
        batch_op.create_index("ix_approvals_decided_at", ["decided_at"], unique=False)
    if op.get_bind().dialect.name == "postgresql":
        day = "CAST(at AT TIME ZONE 'UTC' AS DATE)"
    else:
        # SQLite keeps UTC times as 'YYYY-MM-DD HH:MM:SS...' text (keys/db.py UTCDateTime).
        day = "substr(at, 1, 10)"
    op.execute(_BACKFILL.format(day=day))


def downgrade() -> None:
    with op.batch_alter_table("approvals", schema=None) as batch_op:
        batch_op.drop_index("ix_approvals_decided_at")
    op.drop_table("usage_daily")
