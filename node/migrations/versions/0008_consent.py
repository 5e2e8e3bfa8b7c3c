"""consent: a payer's consents, and which consent paid for which order or claim

Revision ID: 0008
Revises: 0006 (0007, the accounts of issue 15, once both are merged)
Create Date: 2026-12-06 11:00:00
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
        "consents",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("payer_id", sa.Integer(), nullable=False),
        sa.Column("grantee_ref", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("max_minutes", sa.BigInteger(), nullable=False),
        sa.Column("total_minutes", sa.BigInteger(), nullable=False),
        sa.Column("used_minutes", sa.BigInteger(), nullable=False),
        sa.Column("order_id", sa.Integer(), nullable=True),
        sa.Column("granted_at", sa.DateTime(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.Column("granted_by", sa.String(length=64), nullable=False),
        sa.Column("revoked_at", sa.DateTime(), nullable=True),
        sa.Column("revoked_by", sa.String(length=64), nullable=False),
        sa.CheckConstraint("kind IN ('standing', 'once')", name=op.f("ck_consents_kind")),
        sa.CheckConstraint("state IN ('active', 'used', 'revoked')",
                           name=op.f("ck_consents_state")),
        sa.CheckConstraint("max_minutes >= 0 AND total_minutes >= 0 AND used_minutes >= 0",
                           name=op.f("ck_consents_minutes")),
        sa.ForeignKeyConstraint(["payer_id"], ["people.id"],
                                name=op.f("fk_consents_payer_id_people")),
        sa.ForeignKeyConstraint(["order_id"], ["orders.id"],
                                name=op.f("fk_consents_order_id_orders")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_consents")),
    )
    with op.batch_alter_table("consents", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_consents_payer_id"), ["payer_id"], unique=False)

    op.create_table(
        "consent_uses",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("consent_id", sa.Integer(), nullable=False),
        sa.Column("order_id", sa.Integer(), nullable=True),
        sa.Column("claim_id", sa.String(length=36), nullable=True),
        sa.Column("minutes", sa.BigInteger(), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.CheckConstraint("minutes > 0", name=op.f("ck_consent_uses_positive")),
        sa.CheckConstraint("(order_id IS NULL) <> (claim_id IS NULL)",
                           name=op.f("ck_consent_uses_order_or_claim")),
        sa.ForeignKeyConstraint(["consent_id"], ["consents.id"],
                                name=op.f("fk_consent_uses_consent_id_consents")),
        sa.ForeignKeyConstraint(["order_id"], ["orders.id"],
                                name=op.f("fk_consent_uses_order_id_orders")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_consent_uses")),
        sa.UniqueConstraint("claim_id", name=op.f("uq_consent_uses_claim_id")),
        sa.UniqueConstraint("order_id", name=op.f("uq_consent_uses_order_id")),
    )
    with op.batch_alter_table("consent_uses", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_consent_uses_consent_id"), ["consent_id"],
                              unique=False)


def downgrade() -> None:
    with op.batch_alter_table("consent_uses", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_consent_uses_consent_id"))
    op.drop_table("consent_uses")
    with op.batch_alter_table("consents", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_consents_payer_id"))
    op.drop_table("consents")
