"""running totals of each node's open claims beside its position

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25 05:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_OPEN = "('proposed', 'accepted')"


def upgrade() -> None:
    with op.batch_alter_table("positions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("open_claims", sa.BigInteger(), server_default="0",
                                      nullable=False))
        batch_op.add_column(sa.Column("open_debit_minutes", sa.BigInteger(),
                                      server_default="0", nullable=False))
        batch_op.create_check_constraint(
            "open_totals_not_negative", "open_claims >= 0 AND open_debit_minutes >= 0")
    op.execute(
        "UPDATE positions SET "
        "open_claims = (SELECT count(*) FROM claims WHERE claims.state IN " + _OPEN +
        " AND (claims.creditor = positions.node_id OR claims.debtor = positions.node_id)), "
        "open_debit_minutes = (SELECT coalesce(sum(claims.minutes), 0) FROM claims "
        "WHERE claims.state IN " + _OPEN + " AND claims.debtor = positions.node_id)")


def downgrade() -> None:
    with op.batch_alter_table("positions", schema=None) as batch_op:
        batch_op.drop_constraint("open_totals_not_negative", type_="check")
        batch_op.drop_column("open_debit_minutes")
        batch_op.drop_column("open_claims")
