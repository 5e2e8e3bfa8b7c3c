"""moves reach everyone: person events, why an order was cancelled, a retried message's
reason, a move's priority status; final orders hold nothing

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-10 09:00:00
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
        "person_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("person_id", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("actor", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["person_id"], ["people.id"],
                                name=op.f("fk_person_events_person_id_people")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_person_events")),
    )
    with op.batch_alter_table("person_events", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_person_events_person_id"), ["person_id"],
                              unique=False)

    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.add_column(sa.Column("cancel_reason", sa.Text(), server_default="",
                                      nullable=False))
    # What an order shows held is what is reserved for it now: a recorded or cancelled
    # order's holds were posted or released (before this revision it kept showing them).
    op.execute("UPDATE orders SET held_minutes = 0 "
               "WHERE state IN ('recorded', 'cancelled') AND held_minutes <> 0")

    with op.batch_alter_table("claims", schema=None) as batch_op:
        batch_op.add_column(sa.Column("person_priority", sa.Boolean(),
                                      server_default=sa.false(), nullable=False))

    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.add_column(sa.Column("reason", sa.String(length=32), server_default="",
                                      nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_column("reason")
    with op.batch_alter_table("claims", schema=None) as batch_op:
        batch_op.drop_column("person_priority")
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.drop_column("cancel_reason")
    with op.batch_alter_table("person_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_person_events_person_id"))
    op.drop_table("person_events")
