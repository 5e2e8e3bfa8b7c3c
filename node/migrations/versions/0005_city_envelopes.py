"""the city's acts as verified here, refused deliveries, anchors by signing key

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-10 09:00:00

``log_anchors`` gains the id of the key that signed each checkpoint, read from the
envelope already stored for every anchored one (none for one still waiting to be sent),
and is keyed by entry count and key: after a key rotation, the same ledger is anchored
again under the new key.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from timebank.v1 import clearing_pb2

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "city_envelopes",
        sa.Column("digest", sa.LargeBinary(length=32), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("node_id", sa.String(length=6), nullable=False),
        sa.Column("envelope", sa.LargeBinary(), nullable=False),
        sa.Column("recorded_at", sa.DateTime(), nullable=False),
        sa.CheckConstraint("kind IN ('admission', 'revocation', 'roster', 'policy')",
                           name=op.f("ck_city_envelopes_kind")),
        sa.PrimaryKeyConstraint("digest", name=op.f("pk_city_envelopes")),
    )
    op.create_table(
        "refused_deliveries",
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("signer", sa.String(length=16), nullable=False),
        sa.Column("key_id", sa.String(length=16), nullable=False),
        sa.Column("claim_id", sa.String(length=36), nullable=False),
        sa.Column("reason", sa.String(length=32), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("refused_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_refused_deliveries")),
    )
    with op.batch_alter_table("log_anchors", schema=None) as batch_op:
        batch_op.add_column(sa.Column("key_id", sa.String(length=16), nullable=False,
                                      server_default=""))
    anchors = sa.table("log_anchors", sa.column("entry_count", sa.BigInteger()),
                       sa.column("key_id", sa.String()), sa.column("checkpoint", sa.LargeBinary()),
                       sa.column("log_index", sa.BigInteger()))
    conn = op.get_bind()
    for row in conn.execute(sa.select(anchors.c.entry_count, anchors.c.checkpoint)
                            .where(anchors.c.log_index.is_not(None))).all():
        signed = clearing_pb2.Envelope.FromString(bytes(row.checkpoint))
        conn.execute(sa.update(anchors).where(anchors.c.entry_count == row.entry_count)
                     .values(key_id=signed.key_id[:16]))
    with op.batch_alter_table("log_anchors", schema=None) as batch_op:
        batch_op.alter_column("key_id", existing_type=sa.String(length=16),
                              server_default=None)
        batch_op.drop_constraint("pk_log_anchors", type_="primary")
        batch_op.create_primary_key("pk_log_anchors", ["entry_count", "key_id"])


def downgrade() -> None:
    with op.batch_alter_table("log_anchors", schema=None) as batch_op:
        batch_op.drop_constraint("pk_log_anchors", type_="primary")
        batch_op.create_primary_key("pk_log_anchors", ["entry_count"])
        batch_op.drop_column("key_id")
    op.drop_table("refused_deliveries")
    op.drop_table("city_envelopes")
