"""city policies: the city-signed policies this node fetched and verified

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06 09:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "city_policies",
        sa.Column("serial", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("policy_sha256", sa.LargeBinary(length=32), nullable=False),
        sa.Column("effective_at", sa.DateTime(), nullable=False),
        sa.Column("envelope", sa.LargeBinary(), nullable=False),
        sa.Column("received_at", sa.DateTime(), nullable=False),
        sa.CheckConstraint("serial >= 1", name=op.f("ck_city_policies_serial_positive")),
        sa.CheckConstraint("length(policy_sha256) = 32",
                           name=op.f("ck_city_policies_sha256_length")),
        sa.PrimaryKeyConstraint("serial", name=op.f("pk_city_policies")),
    )


def downgrade() -> None:
    op.drop_table("city_policies")
