"""receipts for byte-identical resubmissions; an index for a person's open move

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 01:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "receipts",
        sa.Column("envelope_sha256", sa.LargeBinary(length=32), nullable=False),
        sa.Column("signer", sa.String(length=6), nullable=False),
        sa.Column("kind", sa.String(length=64), nullable=False),
        sa.Column("receipt", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.CheckConstraint(
            "length(envelope_sha256) = 32", name=op.f("ck_receipts_sha256_length")
        ),
        sa.ForeignKeyConstraint(
            ["signer"], ["admissions.node_id"], name=op.f("fk_receipts_signer_admissions")
        ),
        sa.PrimaryKeyConstraint("envelope_sha256", name=op.f("pk_receipts")),
    )
    with op.batch_alter_table("claims", schema=None) as batch_op:
        batch_op.create_index("ix_claims_payer_ref_state", ["payer_ref", "state"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("claims", schema=None) as batch_op:
        batch_op.drop_index("ix_claims_payer_ref_state")
    op.drop_table("receipts")
