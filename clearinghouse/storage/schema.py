"""The clearinghouse's tables. Alembic migrations (clearinghouse/migrations) own the
schema; these typed models describe it, and ``alembic check`` fails if the two drift.

Every signed message is kept as the envelope bytes received (a serialised
``timebank.v1.Envelope``), so that anyone can check the original signature later.
Every constraint is named so migrations stay stable.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from runtime.schema import MetaColumns, UtcDateTime, named_metadata


class Base(DeclarativeBase):
    metadata = named_metadata()


class Meta(MetaColumns, Base):
    """Facts about this clearinghouse fixed at init (city, schema facts)."""


class WriteLock(Base):
    """One row, seeded by the first migration; on PostgreSQL every writer locks it first."""

    __tablename__ = "write_lock"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    __table_args__ = (CheckConstraint("id = 1", name="single_row"),)


class Admission(Base):
    """A district node admitted by the bureau, with its current key.

    ``certificate`` is the city-signed admission envelope as received. A revoked key
    keeps its row (``revoked_at`` and the bureau's ``revocation`` envelope) until a
    certificate with a higher serial rotates it into ``retired_keys``.
    """

    __tablename__ = "admissions"
    node_id: Mapped[str] = mapped_column(String(6), primary_key=True)
    district: Mapped[str] = mapped_column(String(64))
    public_key: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    key_id: Mapped[str] = mapped_column(String(16), unique=True)
    serial: Mapped[int] = mapped_column(BigInteger)
    certificate: Mapped[bytes] = mapped_column(LargeBinary)
    admitted_at: Mapped[datetime] = mapped_column(UtcDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    revocation: Mapped[bytes | None] = mapped_column(LargeBinary)
    __table_args__ = (
        CheckConstraint("serial >= 1", name="serial_positive"),
        CheckConstraint("(revoked_at IS NULL) = (revocation IS NULL)", name="revoked_with_act"),
    )


class RetiredKey(Base):
    """A node key replaced by a certificate with a higher serial: revoked for ever.

    ``revocation`` is the bureau's revocation envelope when one was received; a key
    retired only by rotation has none.
    """

    __tablename__ = "retired_keys"
    key_id: Mapped[str] = mapped_column(String(16), primary_key=True)
    node_id: Mapped[str] = mapped_column(ForeignKey("admissions.node_id"), index=True)
    public_key: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    serial: Mapped[int] = mapped_column(BigInteger)
    certificate: Mapped[bytes] = mapped_column(LargeBinary)
    admitted_at: Mapped[datetime] = mapped_column(UtcDateTime)
    revoked_at: Mapped[datetime] = mapped_column(UtcDateTime)
    revocation: Mapped[bytes | None] = mapped_column(LargeBinary)


class CityRoster(Base):
    """A city-signed roster (``timebank.roster``), one per epoch, as received; tree heads
    name the latest by epoch and digest."""

    __tablename__ = "rosters"
    epoch: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    digest: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    envelope: Mapped[bytes] = mapped_column(LargeBinary)
    recorded_at: Mapped[datetime] = mapped_column(UtcDateTime)
class CityKeyAct(Base):
    """A rotation of the city root key or of the clearinghouse key (``timebank.citykeys``):
    the city-signed envelope as received, by kind and serial (1, 2, 3 ... with no gap).
    Only inserted; the log holds each as a leaf."""

    __tablename__ = "city_key_acts"
    kind: Mapped[str] = mapped_column(String(32), primary_key=True)
    serial: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    envelope: Mapped[bytes] = mapped_column(LargeBinary)
    recorded_at: Mapped[datetime] = mapped_column(UtcDateTime)


class CityPolicyRow(Base):
    """A city policy the bureau issued (``timebank.citypolicy``): the city-signed
    ``policy`` envelope as received, and what the clearinghouse reads of it without
    parsing it again: its serial (1, 2, 3 ... with no gap), the SHA-256 of its TOML
    text and from when it is in force. Only inserted; the log holds each as a leaf."""

    __tablename__ = "city_policies"
    serial: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    policy_sha256: Mapped[bytes] = mapped_column(LargeBinary(32))
    effective_at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    issued_at: Mapped[datetime] = mapped_column(UtcDateTime)
    envelope: Mapped[bytes] = mapped_column(LargeBinary)
    recorded_at: Mapped[datetime] = mapped_column(UtcDateTime)
    __table_args__ = (
        CheckConstraint("serial >= 1", name="serial_positive"),
        CheckConstraint("length(policy_sha256) = 32", name="sha256_length"),
    )


class DirectoryEntry(Base):
    """PersonRef → home node, and the home node's signed registration as received."""

    __tablename__ = "directory"
    person_ref: Mapped[str] = mapped_column(String(64), primary_key=True)
    # not indexed: no query reads people by home (migration 0010)
    home_node_id: Mapped[str] = mapped_column(ForeignKey("admissions.node_id"))
    registered_at: Mapped[datetime] = mapped_column(UtcDateTime)
    registration: Mapped[bytes] = mapped_column(LargeBinary)


class ClaimRow(Base):
    """A claim between two districts and the signed envelopes that moved it.

    Kind, state and reason hold the values of ``clearinghouse.domain.claims``'
    ClaimKind, ClaimState and RejectReason. ``posted_minutes`` is set exactly when
    completed (the domain's Claim checks it whenever a row is loaded).

    Settlement (issue 16, migration 0009): ``completed_index`` is the log leaf that
    completed the claim, written in the transaction that logs the completing Submit, so
    a period ``[start, end)`` of the log is a range of it; ``settled_serial`` is the
    statement that settled it (NULL: not yet; a bureau decision that leaves it out of a
    revised statement sets it back to NULL, and the next period takes it).
    """

    __tablename__ = "claims"
    claim_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    creditor: Mapped[str] = mapped_column(ForeignKey("admissions.node_id"))
    debtor: Mapped[str] = mapped_column(ForeignKey("admissions.node_id"))
    payer_ref: Mapped[str] = mapped_column(String(64))
    minutes: Mapped[int] = mapped_column(BigInteger)
    posted_minutes: Mapped[int | None] = mapped_column(BigInteger)
    state: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)
    proposal: Mapped[bytes] = mapped_column(LargeBinary)
    decision: Mapped[bytes | None] = mapped_column(LargeBinary)
    finish: Mapped[bytes | None] = mapped_column(LargeBinary)
    completed_index: Mapped[int | None] = mapped_column(BigInteger)
    settled_serial: Mapped[int | None] = mapped_column(BigInteger)
    __table_args__ = (
        CheckConstraint("kind IN ('redemption', 'move')", name="kind"),
        CheckConstraint(
            "state IN ('proposed', 'accepted', 'completed', 'voided', 'rejected', 'expired')",
            name="state",
        ),
        CheckConstraint("creditor <> debtor", name="not_self"),
        CheckConstraint("minutes > 0", name="minutes_positive"),
        Index("ix_claims_state_expires_at", "state", "expires_at"),
        # no index by party and state: open totals are kept on positions (migration
        # 0010); the party indexes below serve the listing
        # a person's open move (one at a time); added by migration 0002
        Index("ix_claims_payer_ref_state", "payer_ref", "state"),
        # closing a period: the unsettled (NULL) claims completed below its end; added
        # by migration 0009
        Index("ix_claims_settled_serial_completed_index", "settled_serial",
              "completed_index"),
        # a statement's claims, paged by claim id (GetSettlementClaims)
        Index("ix_claims_settled_serial_claim_id", "settled_serial", "claim_id"),
        # claims newest first, of one state or one district (ListClaims); added by
        # migration 0011
        Index("ix_claims_state_claim_id", "state", "claim_id"),
        Index("ix_claims_creditor_claim_id", "creditor", "claim_id"),
        Index("ix_claims_debtor_claim_id", "debtor", "claim_id"),
        CheckConstraint("settled_serial IS NULL OR completed_index IS NOT NULL",
                        name="settled_when_completed"),
    )


class Position(Base):
    """A node's running net position (+ owed to it, − it owes), its net debit limit, and
    the running totals of its open claims."""

    __tablename__ = "positions"
    node_id: Mapped[str] = mapped_column(ForeignKey("admissions.node_id"), primary_key=True)
    net_minutes: Mapped[int] = mapped_column(BigInteger)
    net_debit_limit_minutes: Mapped[int] = mapped_column(BigInteger)
    # Running totals over the node's open (proposed or accepted) claims, kept by every
    # claim insert and transition, so a proposal's limits are checked without counting:
    # claims it is a party to, and the minutes of those it owes.
    open_claims: Mapped[int] = mapped_column(BigInteger, server_default="0")
    open_debit_minutes: Mapped[int] = mapped_column(BigInteger, server_default="0")
    __table_args__ = (
        CheckConstraint("net_debit_limit_minutes >= 0", name="limit_not_negative"),
        CheckConstraint("open_claims >= 0 AND open_debit_minutes >= 0",
                        name="open_totals_not_negative"),
    )


class Delivery(Base):
    """A message queued for a node, in its own sequence from 1.

    ``envelope`` holds the serialised, *unsigned* ``timebank.v1.Delivery`` (seq,
    recipient, the relayed envelope as received or the expired claim id, the claim's
    state, the time); the gRPC layer signs it as a ``delivery`` envelope when it sends it.
    """

    __tablename__ = "deliveries"
    node_id: Mapped[str] = mapped_column(ForeignKey("admissions.node_id"), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    envelope: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    __table_args__ = (CheckConstraint("seq >= 1", name="seq_positive"),)


class Ack(Base):
    """The last delivery sequence number a node acknowledged (everything up to it applied)."""

    __tablename__ = "acks"
    node_id: Mapped[str] = mapped_column(ForeignKey("admissions.node_id"), primary_key=True)
    acked_seq: Mapped[int] = mapped_column(BigInteger)
    __table_args__ = (CheckConstraint("acked_seq >= 0", name="acked_not_negative"),)


class Receipt(Base):
    """The signed receipt given for a node's Submit, keyed by SHA-256 of the bytes
    submitted, so a byte-identical resubmission gets byte-identically the same receipt.

    ``receipt`` is the serialised, clearinghouse-signed ``timebank.v1.Envelope`` (kind
    ``receipt``) exactly as first returned; it is written in the same transaction as the
    work it acknowledges. Only accepted submissions have one (a refusal stores nothing).
    Rows are kept for ever, as history: one row of about 250 bytes per accepted
    submission (some 90 MB per million claims of three steps each).
    """

    __tablename__ = "receipts"
    envelope_sha256: Mapped[bytes] = mapped_column(LargeBinary(32), primary_key=True)
    signer: Mapped[str] = mapped_column(ForeignKey("admissions.node_id"))
    kind: Mapped[str] = mapped_column(String(64))
    receipt: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    __table_args__ = (
        CheckConstraint("length(envelope_sha256) = 32", name="sha256_length"),
    )


class LogLeaf(Base):
    """One entry of the transparency log (RFC 9162), in append order from 0.

    ``data`` is the leaf as hashed (a serialised protobuf the use-case layer gives);
    ``claim_id`` and ``node_id`` say what it concerns, to find a claim's or a node's leaves.
    """

    __tablename__ = "log_leaves"
    idx: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    data: Mapped[bytes] = mapped_column(LargeBinary)
    kind: Mapped[str] = mapped_column(String(32))
    claim_id: Mapped[str | None] = mapped_column(String(36), index=True)
    node_id: Mapped[str | None] = mapped_column(String(6), index=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    __table_args__ = (CheckConstraint("idx >= 0", name="idx_not_negative"),)


class LogHash(Base):
    """The hash of every perfect aligned subtree of the log: leaves [idx·2^level,
    (idx+1)·2^level). Level 0 holds the leaf hashes. About two rows per leaf."""

    __tablename__ = "log_hashes"
    level: Mapped[int] = mapped_column(SmallInteger, primary_key=True, autoincrement=False)
    idx: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    __table_args__ = (CheckConstraint("length(hash) = 32", name="hash_length"),)


class TreeHead(Base):
    """A signed tree head the clearinghouse published: its size, root and the C2SP
    signed-note checkpoint as published."""

    __tablename__ = "tree_heads"
    size: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    root: Mapped[bytes] = mapped_column(LargeBinary(32))
    note: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    __table_args__ = (
        CheckConstraint("size >= 0", name="size_not_negative"),
        CheckConstraint("length(root) = 32", name="root_length"),
    )


class Cosignature(Base):
    """A witness's cosignature of a tree head: one signed-note signature line."""

    __tablename__ = "cosignatures"
    size: Mapped[int] = mapped_column(ForeignKey("tree_heads.size"), primary_key=True)
    witness: Mapped[str] = mapped_column(ForeignKey("admissions.node_id"), primary_key=True)
    line: Mapped[str] = mapped_column(Text)
    timestamp: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class SettlementStatementRow(Base):
    """A settlement statement (``timebank.settlement``), one row per revision: the
    clearinghouse-signed ``settlement`` envelope as logged, its log leaf, and what is
    read of it without parsing it again. A period label names one serial (revision 1,
    2 ... of it share the label). ``final``: the revision is countersigned by every
    district or upheld for the rest (only the latest revision of a serial can be).
    Only inserted, and ``final`` only ever set: nothing is unwound."""

    __tablename__ = "settlement_statements"
    serial: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    revision: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    period: Mapped[str] = mapped_column(String(32))
    start_index: Mapped[int] = mapped_column(BigInteger)
    end_index: Mapped[int] = mapped_column(BigInteger)
    statement_sha256: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    envelope: Mapped[bytes] = mapped_column(LargeBinary)
    log_index: Mapped[int] = mapped_column(BigInteger, unique=True)
    closed_at: Mapped[datetime] = mapped_column(UtcDateTime)
    final: Mapped[bool] = mapped_column(Boolean)
    __table_args__ = (
        UniqueConstraint("period", "revision", name="uq_settlement_statements_period"),
        CheckConstraint("serial >= 1 AND revision >= 1", name="serial_positive"),
        CheckConstraint("0 <= start_index AND start_index <= end_index", name="range"),
        CheckConstraint("length(statement_sha256) = 32", name="sha256_length"),
    )


class SettlementActRow(Base):
    """An act on a statement: a district's countersign or dispute (its envelope, sent
    with Submit), the bureau's decision or a default (city-signed), as logged, by its
    log leaf. ``revision``: the revision it names (a default: the final one);
    ``node_id``: the district it concerns (none for a decision). Only inserted."""

    __tablename__ = "settlement_acts"
    log_index: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    serial: Mapped[int] = mapped_column(BigInteger, index=True)
    revision: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(32))
    node_id: Mapped[str | None] = mapped_column(String(6))
    envelope: Mapped[bytes] = mapped_column(LargeBinary)
    recorded_at: Mapped[datetime] = mapped_column(UtcDateTime)
    __table_args__ = (
        CheckConstraint("kind IN ('settlement.countersign', 'settlement.dispute', "
                        "'settlement.decision', 'settlement.default')", name="kind"),
    )
