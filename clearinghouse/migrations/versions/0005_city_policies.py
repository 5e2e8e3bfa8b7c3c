"""city policies: the bureau's city-signed policy acts

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06 09:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "city_policies",
        sa.Column("serial", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("policy_sha256", sa.LargeBinary(length=32), nullable=False),
        sa.Column("effective_at", sa.DateTime(), nullable=False),
        sa.Column("issued_at", sa.DateTime(), nullable=False),
        sa.Column("envelope", sa.LargeBinary(), nullable=False),
        sa.Column("recorded_at", sa.DateTime(), nullable=False),
        sa.CheckConstraint("serial >= 1", name=op.f("ck_city_policies_serial_positive")),
        sa.CheckConstraint("length(policy_sha256) = 32",
                           name=op.f("ck_city_policies_sha256_length")),
        sa.PrimaryKeyConstraint("serial", name=op.f("pk_city_policies")),
    )
    op.create_index(op.f("ix_city_policies_effective_at"), "city_policies", ["effective_at"],
                    unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_city_policies_effective_at"), table_name="city_policies")
    op.drop_table("city_policies")
