"""settlement: the statements a node has seen, and which claims each one settled

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06 14:20:00.000000

Issue 16 (ADR 0019): a node checks each settlement statement against its own ledger,
countersigns or disputes it and, once it is final, posts it. ``claims.settled_serial``
names the statement that settled a completed claim here (0: none yet, its minutes are
still in the clearing account); ``settlements`` keeps every statement seen, what this
node answered and the ledger entry that posted it (``posted_serial`` unique: a serial
is posted once).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("claims", schema=None) as batch_op:
        batch_op.add_column(sa.Column("settled_serial", sa.BigInteger(), nullable=False,
                                      server_default="0"))
        batch_op.create_check_constraint(op.f("ck_claims_settled_serial"),
                                         "settled_serial >= 0")
        batch_op.create_index(batch_op.f("ix_claims_settled_serial"), ["settled_serial"],
                              unique=False)
    op.create_table(
        "settlements",
        sa.Column("serial", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("revision", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("period", sa.String(length=32), nullable=False),
        sa.Column("statement_sha256", sa.LargeBinary(length=32), nullable=False),
        sa.Column("envelope", sa.LargeBinary(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("net_minutes", sa.BigInteger(), nullable=False),
        sa.Column("answer_kind", sa.String(length=32), server_default="", nullable=False),
        sa.Column("answer", sa.LargeBinary(), nullable=True),
        sa.Column("outbox_id", sa.Integer(), nullable=True),
        sa.Column("differences", sa.Integer(), server_default="0", nullable=False),
        sa.Column("detail", sa.Text(), server_default="", nullable=False),
        sa.Column("evidence", sa.LargeBinary(), nullable=True),
        sa.Column("ledger_seq", sa.BigInteger(), nullable=True),
        sa.Column("posted_serial", sa.BigInteger(), nullable=True),
        sa.Column("seen_at", sa.DateTime(), nullable=False),
        sa.Column("decided_at", sa.DateTime(), nullable=True),
        sa.Column("final_at", sa.DateTime(), nullable=True),
        sa.Column("posted_at", sa.DateTime(), nullable=True),
        sa.CheckConstraint("serial >= 1 AND revision >= 1",
                           name=op.f("ck_settlements_serial_positive")),
        sa.CheckConstraint("state IN ('checked', 'countersigned', 'disputed', 'final', "
                           "'posted')", name=op.f("ck_settlements_state")),
        sa.CheckConstraint("length(statement_sha256) = 32",
                           name=op.f("ck_settlements_sha256_length")),
        sa.CheckConstraint("posted_serial IS NULL OR posted_serial = serial",
                           name=op.f("ck_settlements_posted_serial")),
        sa.PrimaryKeyConstraint("serial", "revision", name=op.f("pk_settlements")),
        sa.UniqueConstraint("posted_serial", name=op.f("uq_settlements_posted_serial")),
    )


def downgrade() -> None:
    op.drop_table("settlements")
    with op.batch_alter_table("claims", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_claims_settled_serial"))
        batch_op.drop_constraint(op.f("ck_claims_settled_serial"), type_="check")
        batch_op.drop_column("settled_serial")
