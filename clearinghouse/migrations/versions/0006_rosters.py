"""city-signed rosters: the set of districts every tree head is judged by

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06 08:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rosters",
        sa.Column("epoch", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("digest", sa.LargeBinary(length=32), nullable=False),
        sa.Column("envelope", sa.LargeBinary(), nullable=False),
        sa.Column("recorded_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("epoch", name=op.f("pk_rosters")),
        sa.UniqueConstraint("digest", name=op.f("uq_rosters_digest")),
    )


def downgrade() -> None:
    op.drop_table("rosters")
