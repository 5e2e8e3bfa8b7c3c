"""the volunteer rates the person served (满意度互评): the second half of the mutual rating

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-12 10:00:00.000000

Until now only the recipient's side rated a service (``orders.rating`` and ``comment``,
at verification). The volunteer's rating of the person served is given once, after the
service: ``rating_by_volunteer`` (1..5; 0 for every order rated before, and for one not
rated yet), ``comment_by_volunteer`` and ``rated_by_volunteer_at`` (set exactly when a
rating is). Ratings move no hours: nothing of the ledger changes.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.add_column(sa.Column("rating_by_volunteer", sa.Integer(), server_default="0",
                                      nullable=False))
        batch_op.add_column(sa.Column("comment_by_volunteer", sa.Text(), server_default="",
                                      nullable=False))
        batch_op.add_column(sa.Column("rated_by_volunteer_at", sa.DateTime(), nullable=True))
        batch_op.create_check_constraint(op.f("ck_orders_rating_by_volunteer"),
                                         "rating_by_volunteer BETWEEN 0 AND 5")
        batch_op.create_check_constraint(
            op.f("ck_orders_rated_by_volunteer_at"),
            "(rating_by_volunteer = 0) = (rated_by_volunteer_at IS NULL)")


def downgrade() -> None:
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_orders_rated_by_volunteer_at"), type_="check")
        batch_op.drop_constraint(op.f("ck_orders_rating_by_volunteer"), type_="check")
        batch_op.drop_column("rated_by_volunteer_at")
        batch_op.drop_column("comment_by_volunteer")
        batch_op.drop_column("rating_by_volunteer")
