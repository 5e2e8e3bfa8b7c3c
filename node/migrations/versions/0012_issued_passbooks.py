"""issued passbooks: a copy of every passbook the node's API signed, by its digest

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-14 09:00:00.000000

A paper passbook prints the digest of the statement the node signed (its check code).
Each ``GetPassbook`` makes a new statement, so the file asked for later would never be
the one on paper: the node keeps each file it issued, as a bank keeps copies of the
statements it sent, and gives it again by that code. ``digest`` is the SHA-256 the node
signed (the key: the same statement is kept once); ``statement_file`` the signed file
as sent, at most ``node.usecases.statement.MAX_SERVED_BYTES``.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "passbooks",
        sa.Column("digest", sa.LargeBinary(length=32), nullable=False),
        sa.Column("person_id", sa.Integer(), nullable=False),
        sa.Column("made_at", sa.DateTime(), nullable=False),
        sa.Column("warning", sa.Text(), server_default="", nullable=False),
        sa.Column("statement_file", sa.LargeBinary(), nullable=False),
        sa.CheckConstraint("length(digest) = 32", name=op.f("ck_passbooks_digest_length")),
        sa.CheckConstraint("length(statement_file) BETWEEN 1 AND 3145728",
                           name=op.f("ck_passbooks_file_size")),
        sa.ForeignKeyConstraint(["person_id"], ["people.id"],
                                name=op.f("fk_passbooks_person_id_people")),
        sa.PrimaryKeyConstraint("digest", name=op.f("pk_passbooks")),
    )
    with op.batch_alter_table("passbooks", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_passbooks_person_id"), ["person_id"],
                              unique=False)


def downgrade() -> None:
    op.drop_table("passbooks")
