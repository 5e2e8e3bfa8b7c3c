"""the transparency log: leaves, perfect-subtree hashes, tree heads and cosignatures

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26 01:00:00.000000
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
        "log_leaves",
        sa.Column("idx", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("claim_id", sa.String(length=36), nullable=True),
        sa.Column("node_id", sa.String(length=6), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.CheckConstraint("idx >= 0", name=op.f("ck_log_leaves_idx_not_negative")),
        sa.PrimaryKeyConstraint("idx", name=op.f("pk_log_leaves")),
    )
    op.create_index(op.f("ix_log_leaves_claim_id"), "log_leaves", ["claim_id"], unique=False)
    op.create_index(op.f("ix_log_leaves_node_id"), "log_leaves", ["node_id"], unique=False)
    op.create_table(
        "log_hashes",
        sa.Column("level", sa.SmallInteger(), autoincrement=False, nullable=False),
        sa.Column("idx", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("hash", sa.LargeBinary(length=32), nullable=False),
        sa.CheckConstraint("length(hash) = 32", name=op.f("ck_log_hashes_hash_length")),
        sa.PrimaryKeyConstraint("level", "idx", name=op.f("pk_log_hashes")),
    )
    op.create_table(
        "tree_heads",
        sa.Column("size", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("root", sa.LargeBinary(length=32), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.CheckConstraint("size >= 0", name=op.f("ck_tree_heads_size_not_negative")),
        sa.CheckConstraint("length(root) = 32", name=op.f("ck_tree_heads_root_length")),
        sa.PrimaryKeyConstraint("size", name=op.f("pk_tree_heads")),
    )
    op.create_table(
        "cosignatures",
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("witness", sa.String(length=6), nullable=False),
        sa.Column("line", sa.Text(), nullable=False),
        sa.Column("timestamp", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["size"], ["tree_heads.size"], name=op.f("fk_cosignatures_size_tree_heads")
        ),
        sa.ForeignKeyConstraint(
            ["witness"], ["admissions.node_id"],
            name=op.f("fk_cosignatures_witness_admissions"),
        ),
        sa.PrimaryKeyConstraint("size", "witness", name=op.f("pk_cosignatures")),
    )


def downgrade() -> None:
    op.drop_table("cosignatures")
    op.drop_table("tree_heads")
    op.drop_table("log_hashes")
    op.drop_index(op.f("ix_log_leaves_node_id"), table_name="log_leaves")
    op.drop_index(op.f("ix_log_leaves_claim_id"), table_name="log_leaves")
    op.drop_table("log_leaves")
