"""provenance

The deployment's C2PA signing identities (generations of an X.509 root and signing
certificate, keys encrypted) and the forensic index of delivered videos.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-20
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "provenance_signers",
        sa.Column("generation", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        sa.Column("key_id", sa.String(length=16), nullable=False),
        sa.Column("root_cert_pem", sa.Text(), nullable=False),
        sa.Column("root_key_encrypted", sa.Text(), nullable=False),
        sa.Column("cert_pem", sa.Text(), nullable=False),
        sa.Column("key_encrypted", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("generation"),
        sa.UniqueConstraint("key_id"),
    )
    op.create_table(
        "provenance_deliveries",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("request_id", sa.String(length=40), nullable=False),
        sa.Column("route", sa.String(length=16), nullable=False),
        sa.Column("video_id", sa.String(length=128), nullable=False),
        sa.Column("tester_id", sa.String(length=32), nullable=False),
        sa.Column("key_id", sa.String(length=32), nullable=False),
        sa.Column("cohort", sa.String(length=64), nullable=True),
        sa.Column("recipient", sa.String(length=200), nullable=False),
        sa.Column("downloading_key_id", sa.String(length=32), nullable=True),
        sa.Column("approval_id", sa.String(length=32), nullable=True),
        sa.Column("share_link_id", sa.String(length=32), nullable=True),
        sa.Column("audit_seq", sa.Integer(), nullable=False),
        sa.Column("signer_generation", sa.Integer(), nullable=True),
        sa.Column("unsigned_reason", sa.String(length=64), nullable=True),
        sa.Column("delivered_bytes", sa.BigInteger(), nullable=False),
        sa.Column("delivered_sha256", sa.String(length=64), nullable=False),
        sa.Column("original_sha256", sa.String(length=64), nullable=False),
        sa.Column("media_sha256", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("provenance_deliveries", schema=None) as batch_op:
        for column in ("video_id", "delivered_sha256", "original_sha256", "media_sha256"):
            batch_op.create_index(f"ix_provenance_deliveries_{column}", [column], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("provenance_deliveries", schema=None) as batch_op:
        for column in ("video_id", "delivered_sha256", "original_sha256", "media_sha256"):
            batch_op.drop_index(f"ix_provenance_deliveries_{column}")
    op.drop_table("provenance_deliveries")
    op.drop_table("provenance_signers")
