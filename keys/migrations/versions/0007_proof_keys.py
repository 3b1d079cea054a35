"""proof keys

Public keys bound to API keys for proof of possession (RFC 9421 signatures), at most one
binding of a key in force; and the proofs' nonces claimed where Redis is not in use.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "proof_keys",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("key_id", sa.String(length=32), nullable=False),
        sa.Column("tester_id", sa.String(length=32), nullable=False),
        sa.Column("algorithm", sa.String(length=32), nullable=False),
        sa.Column("public_key", sa.Text(), nullable=False),
        sa.Column("thumbprint", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        sa.Column("removed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("removed_by", sa.String(length=200), nullable=True),
        sa.ForeignKeyConstraint(["key_id"], ["api_keys.id"]),
        sa.ForeignKeyConstraint(["tester_id"], ["testers.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("proof_keys", schema=None) as batch_op:
        batch_op.create_index("ix_proof_keys_key_id", ["key_id"], unique=False)
        batch_op.create_index("ix_proof_keys_tester_id", ["tester_id"], unique=False)
        batch_op.create_index(
            "ux_proof_keys_in_force",
            ["key_id"],
            unique=True,
            sqlite_where=sa.text("removed_at IS NULL"),
            postgresql_where=sa.text("removed_at IS NULL"),
        )

    op.create_table(
        "proof_nonces",
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    with op.batch_alter_table("proof_nonces", schema=None) as batch_op:
        batch_op.create_index("ix_proof_nonces_expires_at", ["expires_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("proof_nonces", schema=None) as batch_op:
        batch_op.drop_index("ix_proof_nonces_expires_at")
    op.drop_table("proof_nonces")
    with op.batch_alter_table("proof_keys", schema=None) as batch_op:
        batch_op.drop_index("ux_proof_keys_in_force")
        batch_op.drop_index("ix_proof_keys_tester_id")
        batch_op.drop_index("ix_proof_keys_key_id")
    op.drop_table("proof_keys")
