"""rotations of the city root key and of the clearinghouse key (issue 15)

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06 11:00:00.000000
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
        "city_key_acts",
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("serial", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("envelope", sa.LargeBinary(), nullable=False),
        sa.Column("recorded_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("kind", "serial", name=op.f("pk_city_key_acts")),
    )


def downgrade() -> None:
    op.drop_table("city_key_acts")
