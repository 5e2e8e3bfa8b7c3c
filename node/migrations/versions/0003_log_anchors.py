"""ledger checkpoints anchored in the clearinghouse's transparency log

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25 05:00:00
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
        "log_anchors",
        sa.Column("entry_count", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("chain_head", sa.LargeBinary(length=32), nullable=False),
        sa.Column("ledger_root", sa.LargeBinary(length=32), nullable=False),
        sa.Column("checkpoint", sa.LargeBinary(), nullable=False),
        sa.Column("log_index", sa.BigInteger(), nullable=True),
        sa.Column("log_entry", sa.LargeBinary(), nullable=True),
        sa.Column("log_proof", sa.LargeBinary(), nullable=True),
        sa.Column("tree_head", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("anchored_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("entry_count", name=op.f("pk_log_anchors")),
    )


def downgrade() -> None:
    op.drop_table("log_anchors")
