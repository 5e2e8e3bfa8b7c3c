"""settlement periods: statements, acts on them, and each claim's completing leaf

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06 14:00:00.000000

Claims get ``completed_index`` (the log leaf that completed them) and ``settled_serial``
(the statement that settled them; NULL: not yet), with the index that finds "completed
below a period's end, not settled" without reading every claim. A completed claim of
an older database gets the first of its ``claim`` leaves that records it completed.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from timebank.v1 import clearing_pb2

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def _backfill() -> None:
    """Each completed claim's completing leaf: the first of its claim leaves whose entry
    says COMPLETED (a replayed finish logs another, later leaf)."""
    conn = op.get_bind()
    rows = conn.execute(sa.text(
        "SELECT l.claim_id, l.idx, l.data FROM log_leaves l JOIN claims c "
        "ON c.claim_id = l.claim_id WHERE c.state = 'completed' AND l.kind = 'claim' "
        "ORDER BY l.claim_id, l.idx"))
    found: dict[str, int] = {}
    for claim_id, idx, data in rows:
        if claim_id in found:
            continue
        if clearing_pb2.LogEntry.FromString(bytes(data)).state == \
                clearing_pb2.CLAIM_STATE_COMPLETED:
            found[claim_id] = int(idx)
    for claim_id, idx in found.items():
        conn.execute(sa.text("UPDATE claims SET completed_index = :idx "
                             "WHERE claim_id = :id"), {"idx": idx, "id": claim_id})


def upgrade() -> None:
    with op.batch_alter_table("claims", schema=None) as batch_op:
        batch_op.add_column(sa.Column("completed_index", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("settled_serial", sa.BigInteger(), nullable=True))
        batch_op.create_check_constraint(
            "settled_when_completed", "settled_serial IS NULL OR completed_index IS NOT NULL")
        batch_op.create_index("ix_claims_settled_serial_completed_index",
                              ["settled_serial", "completed_index"], unique=False)
        batch_op.create_index("ix_claims_settled_serial_claim_id",
                              ["settled_serial", "claim_id"], unique=False)
    _backfill()
    op.create_table(
        "settlement_statements",
        sa.Column("serial", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("revision", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("period", sa.String(length=32), nullable=False),
        sa.Column("start_index", sa.BigInteger(), nullable=False),
        sa.Column("end_index", sa.BigInteger(), nullable=False),
        sa.Column("statement_sha256", sa.LargeBinary(length=32), nullable=False),
        sa.Column("envelope", sa.LargeBinary(), nullable=False),
        sa.Column("log_index", sa.BigInteger(), nullable=False),
        sa.Column("closed_at", sa.DateTime(), nullable=False),
        sa.Column("final", sa.Boolean(), nullable=False),
        sa.CheckConstraint("0 <= start_index AND start_index <= end_index",
                           name=op.f("ck_settlement_statements_range")),
        sa.CheckConstraint("length(statement_sha256) = 32",
                           name=op.f("ck_settlement_statements_sha256_length")),
        sa.CheckConstraint("serial >= 1 AND revision >= 1",
                           name=op.f("ck_settlement_statements_serial_positive")),
        sa.PrimaryKeyConstraint("serial", "revision", name=op.f("pk_settlement_statements")),
        sa.UniqueConstraint("log_index", name=op.f("uq_settlement_statements_log_index")),
        sa.UniqueConstraint("period", "revision", name="uq_settlement_statements_period"),
        sa.UniqueConstraint("statement_sha256",
                            name=op.f("uq_settlement_statements_statement_sha256")),
    )
    op.create_table(
        "settlement_acts",
        sa.Column("log_index", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("serial", sa.BigInteger(), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("node_id", sa.String(length=6), nullable=True),
        sa.Column("envelope", sa.LargeBinary(), nullable=False),
        sa.Column("recorded_at", sa.DateTime(), nullable=False),
        sa.CheckConstraint("kind IN ('settlement.countersign', 'settlement.dispute', "
                           "'settlement.decision', 'settlement.default')",
                           name=op.f("ck_settlement_acts_kind")),
        sa.PrimaryKeyConstraint("log_index", name=op.f("pk_settlement_acts")),
    )
    op.create_index(op.f("ix_settlement_acts_serial"), "settlement_acts", ["serial"],
                    unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_settlement_acts_serial"), table_name="settlement_acts")
    op.drop_table("settlement_acts")
    op.drop_table("settlement_statements")
    with op.batch_alter_table("claims", schema=None) as batch_op:
        batch_op.drop_index("ix_claims_settled_serial_claim_id")
        batch_op.drop_index("ix_claims_settled_serial_completed_index")
        batch_op.drop_constraint("settled_when_completed", type_="check")
        batch_op.drop_column("settled_serial")
        batch_op.drop_column("completed_index")
