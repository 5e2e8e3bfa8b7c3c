"""the city's key rotations among the city acts a node stores (issue 15)

Revision ID: 0009
Revises: 0006
Create Date: 2026-12-06 11:10:00.000000

A node stores the rotations of the city root key and of the clearinghouse key with the
other city acts (``city_key``, ``clearinghouse_key``): the kind column widens to 32
characters and its check names the two new kinds.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_OLD = "kind IN ('admission', 'revocation', 'roster', 'policy')"
_NEW = ("kind IN ('admission', 'revocation', 'roster', 'policy', 'city_key', "
        "'clearinghouse_key')")


def upgrade() -> None:
    with op.batch_alter_table("city_envelopes", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_city_envelopes_kind"), type_="check")
        batch_op.alter_column("kind", existing_type=sa.String(length=16),
                              type_=sa.String(length=32), existing_nullable=False)
        batch_op.create_check_constraint(op.f("ck_city_envelopes_kind"), _NEW)


def downgrade() -> None:
    op.execute("DELETE FROM city_envelopes WHERE kind IN ('city_key', 'clearinghouse_key')")
    with op.batch_alter_table("city_envelopes", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_city_envelopes_kind"), type_="check")
        batch_op.alter_column("kind", existing_type=sa.String(length=32),
                              type_=sa.String(length=16), existing_nullable=False)
        batch_op.create_check_constraint(op.f("ck_city_envelopes_kind"), _OLD)
