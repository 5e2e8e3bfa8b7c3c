"""inter-district claims: home node, claim holds, claims, outbox, inbox

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 01:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("people", schema=None) as batch_op:
        batch_op.add_column(sa.Column("home_node_id", sa.String(length=6), nullable=True))

    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.add_column(sa.Column("claim_id", sa.String(length=36), nullable=True))
        batch_op.create_unique_constraint(batch_op.f("uq_orders_claim_id"), ["claim_id"])

    with op.batch_alter_table("holds", schema=None) as batch_op:
        batch_op.add_column(sa.Column("claim_id", sa.String(length=36), nullable=True))
        batch_op.alter_column("order_id", existing_type=sa.Integer(), nullable=True)
        batch_op.create_index(batch_op.f("ix_holds_claim_id"), ["claim_id"], unique=False)
        batch_op.create_check_constraint(
            "order_or_claim", "(order_id IS NULL) <> (claim_id IS NULL)")

    op.create_table(
        "claims",
        sa.Column("claim_id", sa.String(length=36), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("counterparty", sa.String(length=6), nullable=False),
        sa.Column("person_ref", sa.String(length=64), nullable=False),
        sa.Column("recipient_ref", sa.String(length=64), nullable=False),
        sa.Column("minutes", sa.BigInteger(), nullable=False),
        sa.Column("posted_minutes", sa.BigInteger(), nullable=False),
        sa.Column("origins", sa.Text(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.String(length=32), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("order_id", sa.Integer(), nullable=True),
        sa.Column("person_id", sa.Integer(), nullable=True),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.CheckConstraint("kind IN ('redemption', 'move')", name=op.f("ck_claims_kind")),
        sa.CheckConstraint("role IN ('creditor', 'debtor')", name=op.f("ck_claims_role")),
        sa.CheckConstraint("minutes > 0", name=op.f("ck_claims_positive")),
        sa.CheckConstraint("posted_minutes >= 0 AND posted_minutes <= minutes",
                           name=op.f("ck_claims_posted")),
        sa.ForeignKeyConstraint(["order_id"], ["orders.id"],
                                name=op.f("fk_claims_order_id_orders")),
        sa.ForeignKeyConstraint(["person_id"], ["people.id"],
                                name=op.f("fk_claims_person_id_people")),
        sa.PrimaryKeyConstraint("claim_id", name=op.f("pk_claims")),
    )
    with op.batch_alter_table("claims", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_claims_person_ref"), ["person_ref"], unique=False)
        batch_op.create_index(batch_op.f("ix_claims_state"), ["state"], unique=False)

    op.create_table(
        "outbox",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("claim_id", sa.String(length=36), nullable=True),
        sa.Column("envelope", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(), nullable=False),
        sa.Column("done_at", sa.DateTime(), nullable=True),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbox")),
    )
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_outbox_claim_id"), ["claim_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_outbox_done_at"), ["done_at"], unique=False)

    op.create_table(
        "inbox",
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("claim_id", sa.String(length=36), nullable=False),
        sa.Column("applied_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_inbox")),
    )


def downgrade() -> None:
    op.drop_table("inbox")
    op.drop_table("outbox")
    op.drop_table("claims")
    with op.batch_alter_table("holds", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("ck_holds_order_or_claim"), type_="check")
        batch_op.drop_index(batch_op.f("ix_holds_claim_id"))
        batch_op.alter_column("order_id", existing_type=sa.Integer(), nullable=False)
        batch_op.drop_column("claim_id")
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("uq_orders_claim_id"), type_="unique")
        batch_op.drop_column("claim_id")
    with op.batch_alter_table("people", schema=None) as batch_op:
        batch_op.drop_column("home_node_id")
