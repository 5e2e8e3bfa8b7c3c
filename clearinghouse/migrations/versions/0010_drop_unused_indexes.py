"""three indexes no statement reads

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07 04:40:00.000000

``ix_claims_debtor_state`` and ``ix_claims_creditor_state`` (claims by party and state)
and ``ix_directory_home_node_id`` (people by home) serve no query: open totals are kept
on ``positions``, a statement's claims are found by ``settled_serial``, a person by
``person_ref``, and no admission is ever deleted (the one thing an index on a foreign
key serves). Every claim inserted and every claim or home that changes wrote an entry in
each, and on PostgreSQL the home index made a move's directory update a new row version
in both of the directory's indexes.
"""

from __future__ import annotations

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_claims_debtor_state", table_name="claims")
    op.drop_index("ix_claims_creditor_state", table_name="claims")
    op.drop_index("ix_directory_home_node_id", table_name="directory")


def downgrade() -> None:
    op.create_index("ix_directory_home_node_id", "directory", ["home_node_id"], unique=False)
    op.create_index("ix_claims_creditor_state", "claims", ["creditor", "state"], unique=False)
    op.create_index("ix_claims_debtor_state", "claims", ["debtor", "state"], unique=False)
