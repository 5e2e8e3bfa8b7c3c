"""claims listed newest first, by state and by district (ListClaims)

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-09 10:00:00.000000

The bureau's console lists claims newest first (by claim id, a UUIDv7, descending), all
of them or those in one state or of one district (creditor or debtor), a page at a time
(``ListClaims``). ``ix_claims_state_claim_id`` and ``ix_claims_creditor_claim_id`` /
``ix_claims_debtor_claim_id`` make every such page a short walk down one index (two for a
district: its claims as creditor and as debtor, merged), however many claims the city
has: without them a page of a rare state, or of a district with few claims, read the
whole table. The price is an entry in each for every claim written, and a move in the
state index at each of its transitions; migration 0010 dropped two indexes by party and
state that no query read, and these are read.
"""

from __future__ import annotations

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

INDEXES = (("ix_claims_state_claim_id", ["state", "claim_id"]),
           ("ix_claims_creditor_claim_id", ["creditor", "claim_id"]),
           ("ix_claims_debtor_claim_id", ["debtor", "claim_id"]))


def upgrade() -> None:
    for name, columns in INDEXES:
        op.create_index(name, "claims", columns, unique=False)


def downgrade() -> None:
    for name, _ in reversed(INDEXES):
        op.drop_index(name, table_name="claims")
