"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-25 00:13:35.651592
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "admissions",
        sa.Column("node_id", sa.String(length=6), nullable=False),
        sa.Column("district", sa.String(length=64), nullable=False),
        sa.Column("public_key", sa.LargeBinary(length=32), nullable=False),
        sa.Column("key_id", sa.String(length=16), nullable=False),
        sa.Column("serial", sa.BigInteger(), nullable=False),
        sa.Column("certificate", sa.LargeBinary(), nullable=False),
        sa.Column("admitted_at", sa.DateTime(), nullable=False),
        sa.Column("revoked_at", sa.DateTime(), nullable=True),
        sa.Column("revocation", sa.LargeBinary(), nullable=True),
        sa.CheckConstraint(
            "(revoked_at IS NULL) = (revocation IS NULL)",
            name=op.f("ck_admissions_revoked_with_act"),
        ),
        sa.CheckConstraint("serial >= 1", name=op.f("ck_admissions_serial_positive")),
        sa.PrimaryKeyConstraint("node_id", name=op.f("pk_admissions")),
        sa.UniqueConstraint("key_id", name=op.f("uq_admissions_key_id")),
        sa.UniqueConstraint("public_key", name=op.f("uq_admissions_public_key")),
    )
    op.create_table(
        "meta",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_meta")),
    )
    write_lock = op.create_table(
        "write_lock",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.CheckConstraint("id = 1", name=op.f("ck_write_lock_single_row")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_write_lock")),
    )
    # the one row every writer locks first on PostgreSQL (clearinghouse.storage.db)
    op.bulk_insert(write_lock, [{"id": 1}])
    op.create_table(
        "acks",
        sa.Column("node_id", sa.String(length=6), nullable=False),
        sa.Column("acked_seq", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("acked_seq >= 0", name=op.f("ck_acks_acked_not_negative")),
        sa.ForeignKeyConstraint(
            ["node_id"], ["admissions.node_id"], name=op.f("fk_acks_node_id_admissions")
        ),
        sa.PrimaryKeyConstraint("node_id", name=op.f("pk_acks")),
    )
    op.create_table(
        "claims",
        sa.Column("claim_id", sa.String(length=36), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("creditor", sa.String(length=6), nullable=False),
        sa.Column("debtor", sa.String(length=6), nullable=False),
        sa.Column("payer_ref", sa.String(length=64), nullable=False),
        sa.Column("minutes", sa.BigInteger(), nullable=False),
        sa.Column("posted_minutes", sa.BigInteger(), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.String(length=32), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.Column("proposal", sa.LargeBinary(), nullable=False),
        sa.Column("decision", sa.LargeBinary(), nullable=True),
        sa.Column("finish", sa.LargeBinary(), nullable=True),
        sa.CheckConstraint("kind IN ('redemption', 'move')", name=op.f("ck_claims_kind")),
        sa.CheckConstraint(
            "state IN ('proposed', 'accepted', 'completed', 'voided', 'rejected', 'expired')",
            name=op.f("ck_claims_state"),
        ),
        sa.CheckConstraint("creditor <> debtor", name=op.f("ck_claims_not_self")),
        sa.CheckConstraint("minutes > 0", name=op.f("ck_claims_minutes_positive")),
        sa.ForeignKeyConstraint(
            ["creditor"], ["admissions.node_id"], name=op.f("fk_claims_creditor_admissions")
        ),
        sa.ForeignKeyConstraint(
            ["debtor"], ["admissions.node_id"], name=op.f("fk_claims_debtor_admissions")
        ),
        sa.PrimaryKeyConstraint("claim_id", name=op.f("pk_claims")),
    )
    with op.batch_alter_table("claims", schema=None) as batch_op:
        batch_op.create_index("ix_claims_creditor_state", ["creditor", "state"], unique=False)
        batch_op.create_index("ix_claims_debtor_state", ["debtor", "state"], unique=False)
        batch_op.create_index("ix_claims_state_expires_at", ["state", "expires_at"], unique=False)

    op.create_table(
        "deliveries",
        sa.Column("node_id", sa.String(length=6), nullable=False),
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("envelope", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.CheckConstraint("seq >= 1", name=op.f("ck_deliveries_seq_positive")),
        sa.ForeignKeyConstraint(
            ["node_id"], ["admissions.node_id"], name=op.f("fk_deliveries_node_id_admissions")
        ),
        sa.PrimaryKeyConstraint("node_id", "seq", name=op.f("pk_deliveries")),
    )
    op.create_table(
        "directory",
        sa.Column("person_ref", sa.String(length=64), nullable=False),
        sa.Column("home_node_id", sa.String(length=6), nullable=False),
        sa.Column("registered_at", sa.DateTime(), nullable=False),
        sa.Column("registration", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["home_node_id"],
            ["admissions.node_id"],
            name=op.f("fk_directory_home_node_id_admissions"),
        ),
        sa.PrimaryKeyConstraint("person_ref", name=op.f("pk_directory")),
    )
    with op.batch_alter_table("directory", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_directory_home_node_id"), ["home_node_id"], unique=False
        )

    op.create_table(
        "positions",
        sa.Column("node_id", sa.String(length=6), nullable=False),
        sa.Column("net_minutes", sa.BigInteger(), nullable=False),
        sa.Column("net_debit_limit_minutes", sa.BigInteger(), nullable=False),
        sa.CheckConstraint(
            "net_debit_limit_minutes >= 0", name=op.f("ck_positions_limit_not_negative")
        ),
        sa.ForeignKeyConstraint(
            ["node_id"], ["admissions.node_id"], name=op.f("fk_positions_node_id_admissions")
        ),
        sa.PrimaryKeyConstraint("node_id", name=op.f("pk_positions")),
    )
    op.create_table(
        "retired_keys",
        sa.Column("key_id", sa.String(length=16), nullable=False),
        sa.Column("node_id", sa.String(length=6), nullable=False),
        sa.Column("public_key", sa.LargeBinary(length=32), nullable=False),
        sa.Column("serial", sa.BigInteger(), nullable=False),
        sa.Column("certificate", sa.LargeBinary(), nullable=False),
        sa.Column("admitted_at", sa.DateTime(), nullable=False),
        sa.Column("revoked_at", sa.DateTime(), nullable=False),
        sa.Column("revocation", sa.LargeBinary(), nullable=True),
        sa.ForeignKeyConstraint(
            ["node_id"], ["admissions.node_id"], name=op.f("fk_retired_keys_node_id_admissions")
        ),
        sa.PrimaryKeyConstraint("key_id", name=op.f("pk_retired_keys")),
        sa.UniqueConstraint("public_key", name=op.f("uq_retired_keys_public_key")),
    )
    with op.batch_alter_table("retired_keys", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_retired_keys_node_id"), ["node_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("retired_keys", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_retired_keys_node_id"))

    op.drop_table("retired_keys")
    op.drop_table("positions")
    with op.batch_alter_table("directory", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_directory_home_node_id"))

    op.drop_table("directory")
    op.drop_table("deliveries")
    with op.batch_alter_table("claims", schema=None) as batch_op:
        batch_op.drop_index("ix_claims_state_expires_at")
        batch_op.drop_index("ix_claims_debtor_state")
        batch_op.drop_index("ix_claims_creditor_state")

    op.drop_table("claims")
    op.drop_table("acks")
    op.drop_table("write_lock")
    op.drop_table("meta")
    op.drop_table("admissions")
