"""The node's tables. Alembic migrations (node/migrations) own the schema; these
typed models describe it, and ``alembic check`` fails if the two drift apart.

Rows that carry history (entries, postings, order events) are only inserted.
Every constraint is named so migrations stay stable.
"""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from runtime.schema import MetaColumns, UtcDateTime, named_metadata


class Base(DeclarativeBase):
    metadata = named_metadata()


class Meta(MetaColumns, Base):
    """Facts about this node fixed at init: node id, district name, schema facts."""


class LedgerHead(Base):
    """The single row naming the chain's last entry; locking it serialises writers."""

    __tablename__ = "ledger_head"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    __table_args__ = (CheckConstraint("id = 1", name="single_row"),)


class ServicePoint(Base):
    __tablename__ = "service_points"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code: Mapped[str] = mapped_column(String(32), unique=True)
    name: Mapped[str] = mapped_column(String(100))
    street: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class StaffMember(Base):
    __tablename__ = "staff"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    service_point_id: Mapped[int] = mapped_column(ForeignKey("service_points.id"))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class Person(Base):
    """A person or group enrolled here. PII (name, number, phone) never leaves the node."""

    __tablename__ = "people"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    person_ref: Mapped[str] = mapped_column(String(64), unique=True)
    kind: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(64))
    id_number: Mapped[str] = mapped_column(String(18), unique=True)
    phone: Mapped[str] = mapped_column(String(32))
    birth_date: Mapped[date | None] = mapped_column(Date)
    priority: Mapped[bool] = mapped_column(Boolean)
    service_point_id: Mapped[int | None] = mapped_column(ForeignKey("service_points.id"))
    enrolled_at: Mapped[datetime] = mapped_column(UtcDateTime)
    #: Where the person's hours are kept: None for this node, else the home node's id
    #: (a visitor served here, or someone who moved away).
    home_node_id: Mapped[str | None] = mapped_column(String(6))
    __table_args__ = (CheckConstraint("kind IN ('individual', 'group')", name="kind"),)


class PersonEvent(Base):
    """Each change of a person's record after enrolment: who made it, when and what
    changed (staff correcting details, the city directory or a move changing where the
    hours are kept). Inserted only."""

    __tablename__ = "person_events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    person_id: Mapped[int] = mapped_column(ForeignKey("people.id"), index=True)
    at: Mapped[datetime] = mapped_column(UtcDateTime)
    actor: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))
    detail: Mapped[str] = mapped_column(Text)


class PersonLink(Base):
    """``other`` stands to ``person`` as ``relation`` (family links are stored both ways)."""

    __tablename__ = "links"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    person_id: Mapped[int] = mapped_column(ForeignKey("people.id"))
    other_id: Mapped[int] = mapped_column(ForeignKey("people.id"))
    relation: Mapped[str] = mapped_column(String(16))
    staff_id: Mapped[int | None] = mapped_column(ForeignKey("staff.id"))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    __table_args__ = (
        UniqueConstraint("person_id", "other_id", "relation", name="uq_links_pair"),
        CheckConstraint("person_id <> other_id", name="not_self"),
    )


class LedgerAccount(Base):
    """An account with its cached balance and holds, kept equal to its postings."""

    __tablename__ = "accounts"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code: Mapped[str] = mapped_column(String(100), unique=True)
    kind: Mapped[str] = mapped_column(String(16))
    origin: Mapped[str | None] = mapped_column(String(16))
    person_id: Mapped[int | None] = mapped_column(ForeignKey("people.id"), index=True)
    balance: Mapped[int] = mapped_column(BigInteger)
    held: Mapped[int] = mapped_column(BigInteger)
    __table_args__ = (CheckConstraint("held >= 0", name="held_not_negative"),)


class LedgerEntry(Base):
    """One transaction in the hash chain. Inserted once; never updated or deleted."""

    __tablename__ = "entries"
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    kind: Mapped[str] = mapped_column(String(16))
    at: Mapped[datetime] = mapped_column(UtcDateTime)
    memo: Mapped[str] = mapped_column(Text)
    order_id: Mapped[int] = mapped_column(BigInteger, index=True)
    reverses_seq: Mapped[int | None] = mapped_column(BigInteger, unique=True)
    prev_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    hash: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)


class LedgerPosting(Base):
    __tablename__ = "postings"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(ForeignKey("entries.seq"))
    position: Mapped[int] = mapped_column(Integer)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    minutes: Mapped[int] = mapped_column(BigInteger)
    __table_args__ = (
        UniqueConstraint("seq", "position", name="uq_postings_seq_position"),
        Index("ix_postings_account_seq", "account_id", "seq"),
        CheckConstraint("minutes <> 0", name="not_zero"),
    )


class Hold(Base):
    """Minutes reserved on an account for an accepted order here, or for a claim another
    district made on this one (exactly one of the two); posted or released once."""

    __tablename__ = "holds"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    order_id: Mapped[int | None] = mapped_column(ForeignKey("orders.id"), index=True)
    claim_id: Mapped[str | None] = mapped_column(String(36), index=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    minutes: Mapped[int] = mapped_column(BigInteger)
    state: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    resolved_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    __table_args__ = (
        CheckConstraint("minutes > 0", name="positive"),
        CheckConstraint("state IN ('active', 'posted', 'released')", name="state"),
        CheckConstraint("(order_id IS NULL) <> (claim_id IS NULL)", name="order_or_claim"),
    )


class Order(Base):
    __tablename__ = "orders"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    state: Mapped[str] = mapped_column(String(16), index=True)
    recipient_id: Mapped[int] = mapped_column(ForeignKey("people.id"), index=True)
    volunteer_id: Mapped[int | None] = mapped_column(ForeignKey("people.id"), index=True)
    category: Mapped[str] = mapped_column(String(32))
    planned_minutes: Mapped[int] = mapped_column(BigInteger)
    payment_source: Mapped[str] = mapped_column(String(16))
    payer_id: Mapped[int | None] = mapped_column(ForeignKey("people.id"))
    requested_by: Mapped[str] = mapped_column(String(64))
    note: Mapped[str] = mapped_column(Text)
    held_minutes: Mapped[int] = mapped_column(BigInteger, default=0)
    measured_minutes: Mapped[int] = mapped_column(BigInteger, default=0)
    recorded_minutes: Mapped[int] = mapped_column(BigInteger, default=0)
    banked_minutes: Mapped[int] = mapped_column(BigInteger, default=0)
    excess_to_pool_minutes: Mapped[int] = mapped_column(BigInteger, default=0)
    unbanked_minutes: Mapped[int] = mapped_column(BigInteger, default=0)
    charged_minutes: Mapped[int] = mapped_column(BigInteger, default=0)
    rating: Mapped[int] = mapped_column(Integer, default=0)
    comment: Mapped[str] = mapped_column(Text, default="")
    verified_by: Mapped[str] = mapped_column(String(64), default="")
    dispute_reason: Mapped[str] = mapped_column(Text, default="")
    resolution: Mapped[str] = mapped_column(Text, default="")
    service_day: Mapped[date | None] = mapped_column(Date)
    requested_at: Mapped[datetime] = mapped_column(UtcDateTime)
    accepted_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    checked_in_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    checked_out_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    verified_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    public_until: Mapped[datetime | None] = mapped_column(UtcDateTime, index=True)
    recorded_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    cancelled_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    #: The redemption claim on the payer's home district, when the hours are kept there.
    claim_id: Mapped[str | None] = mapped_column(String(36), unique=True)
    #: Why a cancelled order was cancelled, as the operator reads it.
    cancel_reason: Mapped[str] = mapped_column(Text, default="", server_default="")
    #: The volunteer's rating of the person served (满意度互评), given once after the
    #: service (0: not yet); ``rating`` and ``comment`` are the recipient side's.
    rating_by_volunteer: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    comment_by_volunteer: Mapped[str] = mapped_column(Text, default="", server_default="")
    rated_by_volunteer_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    __table_args__ = (
        CheckConstraint("planned_minutes > 0", name="planned_positive"),
        CheckConstraint("rating BETWEEN 0 AND 5", name="rating"),
        CheckConstraint("rating_by_volunteer BETWEEN 0 AND 5", name="rating_by_volunteer"),
        CheckConstraint("(rating_by_volunteer = 0) = (rated_by_volunteer_at IS NULL)",
                        name="rated_by_volunteer_at"),
    )


class OrderEvent(Base):
    """Each state change of an order, who made it and why. Inserted only."""

    __tablename__ = "order_events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id"), index=True)
    at: Mapped[datetime] = mapped_column(UtcDateTime)
    from_state: Mapped[str] = mapped_column(String(16))
    to_state: Mapped[str] = mapped_column(String(16))
    actor: Mapped[str] = mapped_column(String(64))
    detail: Mapped[str] = mapped_column(Text)


class IdempotencyRecord(Base):
    """The first response to a mutating call, returned again on a retry with the same key."""

    __tablename__ = "idempotency"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    method: Mapped[str] = mapped_column(String(64))
    fingerprint: Mapped[bytes] = mapped_column(LargeBinary(32))
    response: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class ClaimRow(Base):
    """This node's side of a claim between districts (ADR 0004/0005), as it knows it.

    ``role`` is this node's part: creditor (served the person, or is their new home) or
    debtor (the person's home). The clearinghouse's record is authoritative; this row is
    updated only from its receipts and deliveries, and from this node's own decisions.
    """

    __tablename__ = "claims"
    claim_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    role: Mapped[str] = mapped_column(String(16))
    counterparty: Mapped[str] = mapped_column(String(6))
    person_ref: Mapped[str] = mapped_column(String(64), index=True)
    recipient_ref: Mapped[str] = mapped_column(String(64))
    minutes: Mapped[int] = mapped_column(BigInteger)
    posted_minutes: Mapped[int] = mapped_column(BigInteger)
    origins: Mapped[str] = mapped_column(Text)  # a move's balance by origin, JSON
    state: Mapped[str] = mapped_column(String(16), index=True)
    reason: Mapped[str] = mapped_column(String(32))
    detail: Mapped[str] = mapped_column(Text)
    order_id: Mapped[int | None] = mapped_column(ForeignKey("orders.id"))
    person_id: Mapped[int | None] = mapped_column(ForeignKey("people.id"))
    #: A move: the person is a priority elder (重点老人) at the old home.
    person_priority: Mapped[bool] = mapped_column(Boolean, default=False,
                                                  server_default=false())
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)
    #: The settlement statement whose posting here settled this completed claim (issue
    #: 16); 0 while none has: its minutes are still in the clearing account.
    settled_serial: Mapped[int] = mapped_column(BigInteger, server_default="0",
                                                index=True)
    __table_args__ = (
        CheckConstraint("settled_serial >= 0", name="settled_serial"),
        CheckConstraint("kind IN ('redemption', 'move')", name="kind"),
        CheckConstraint("role IN ('creditor', 'debtor')", name="role"),
        CheckConstraint("minutes > 0", name="positive"),
        CheckConstraint("posted_minutes >= 0 AND posted_minutes <= minutes", name="posted"),
    )


class OutboxMessage(Base):
    """A signed envelope to submit to the clearinghouse, written in the same transaction
    as the change that needs it; the sender submits it until a receipt comes back."""

    __tablename__ = "outbox"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    claim_id: Mapped[str | None] = mapped_column(String(36), index=True)
    envelope: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    attempts: Mapped[int] = mapped_column(Integer)
    next_attempt_at: Mapped[datetime] = mapped_column(UtcDateTime)
    done_at: Mapped[datetime | None] = mapped_column(UtcDateTime, index=True)
    outcome: Mapped[str] = mapped_column(String(16))  # "", "receipt", "refused"
    detail: Mapped[str] = mapped_column(Text)
    #: The stable reason of the last temporary refusal (LIMIT_REACHED, BUSY …) or the
    #: status of the last failed call (UNAVAILABLE …); "" until one.
    reason: Mapped[str] = mapped_column(String(32), default="", server_default="")


class InboxDelivery(Base):
    """A clearinghouse delivery applied here: its sequence number makes it apply once."""

    __tablename__ = "inbox"
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    kind: Mapped[str] = mapped_column(String(32))
    claim_id: Mapped[str] = mapped_column(String(36))
    applied_at: Mapped[datetime] = mapped_column(UtcDateTime)


class RefusedDelivery(Base):
    """A clearinghouse delivery this node refused and did not apply (its sequence number
    is in the inbox too, so the deliveries after it go on): the envelope it relayed was
    not signed by a key the city admitted for its signer and never revoked. Kept for
    ever; ``timebank node check`` shows them."""

    __tablename__ = "refused_deliveries"
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    kind: Mapped[str] = mapped_column(String(32))
    signer: Mapped[str] = mapped_column(String(16))
    key_id: Mapped[str] = mapped_column(String(16))
    claim_id: Mapped[str] = mapped_column(String(36))
    reason: Mapped[str] = mapped_column(String(32))
    detail: Mapped[str] = mapped_column(Text)
    refused_at: Mapped[datetime] = mapped_column(UtcDateTime)


class CityEnvelope(Base):
    """An act of the city (an admission certificate, a revocation, a roster, a policy, a
    rotation of the city's keys),
    the envelope verbatim as the clearinghouse served it, stored once its signature was
    checked under the city's public key from this node's configuration. Only ever
    inserted: a clearinghouse that stops serving a revocation cannot make the node
    forget it."""

    __tablename__ = "city_envelopes"
    digest: Mapped[bytes] = mapped_column(LargeBinary(32), primary_key=True)  # SHA-256
    kind: Mapped[str] = mapped_column(String(32))
    node_id: Mapped[str] = mapped_column(String(6))  # "" for a roster, policy or rotation
    envelope: Mapped[bytes] = mapped_column(LargeBinary)
    recorded_at: Mapped[datetime] = mapped_column(UtcDateTime)
    __table_args__ = (
        CheckConstraint("kind IN ('admission', 'revocation', 'roster', 'policy', "
                        "'city_key', 'clearinghouse_key')", name="kind"),
    )


class LogAnchor(Base):
    """A checkpoint of this node's ledger anchored in the clearinghouse's transparency log
    (ADR 0007): the hash-chain head and Merkle root over the first ``entry_count``
    entries, the signed ``node.checkpoint`` envelope as sent, and the log leaf recording
    it with its inclusion proof in the tree head it was proven in (a C2SP checkpoint
    signed by the clearinghouse). Kept for ever: passbooks and auditors cite them."""

    __tablename__ = "log_anchors"
    entry_count: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    #: The node key that signed it: "" while it waits to be sent (the link signs it with
    #: the key it runs with). After a key rotation the same entry count is anchored again,
    #: under the new key.
    key_id: Mapped[str] = mapped_column(String(16), primary_key=True)
    chain_head: Mapped[bytes] = mapped_column(LargeBinary(32))
    ledger_root: Mapped[bytes] = mapped_column(LargeBinary(32))
    checkpoint: Mapped[bytes] = mapped_column(LargeBinary)
    log_index: Mapped[int | None] = mapped_column(BigInteger)
    log_entry: Mapped[bytes | None] = mapped_column(LargeBinary)
    log_proof: Mapped[bytes | None] = mapped_column(LargeBinary)  # the path's hashes, joined
    tree_head: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    anchored_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class CityPolicyRow(Base):
    """A city policy the bureau signed (``timebank.citypolicy``), as fetched from the
    clearinghouse and verified under the city public key this node is configured with:
    the envelope as received (it is verified again whenever the node opens), and what
    the node reads of it. Only inserted; the policy in force at a time is the one with
    the highest serial whose ``effective_at`` is at or before it."""

    __tablename__ = "city_policies"
    serial: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    policy_sha256: Mapped[bytes] = mapped_column(LargeBinary(32))
    effective_at: Mapped[datetime] = mapped_column(UtcDateTime)
    envelope: Mapped[bytes] = mapped_column(LargeBinary)
    received_at: Mapped[datetime] = mapped_column(UtcDateTime)
    __table_args__ = (
        CheckConstraint("serial >= 1", name="serial_positive"),
        CheckConstraint("length(policy_sha256) = 32", name="sha256_length"),
    )


class ConsentRow(Base):
    """A payer's consent that their hours pay for someone's services (ADR 0017):
    standing (bounded per order, in total, in time) or one-time. Changed only by using
    it (``used_minutes``; a one-time one becomes ``used``) or by revoking it."""

    __tablename__ = "consents"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    payer_id: Mapped[int] = mapped_column(ForeignKey("people.id"), index=True)
    grantee_ref: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(16))
    max_minutes: Mapped[int] = mapped_column(BigInteger)
    total_minutes: Mapped[int] = mapped_column(BigInteger)
    used_minutes: Mapped[int] = mapped_column(BigInteger)
    order_id: Mapped[int | None] = mapped_column(ForeignKey("orders.id"))
    granted_at: Mapped[datetime] = mapped_column(UtcDateTime)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime)
    granted_by: Mapped[str] = mapped_column(String(64))
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    revoked_by: Mapped[str] = mapped_column(String(64))
    __table_args__ = (
        CheckConstraint("kind IN ('standing', 'once')", name="kind"),
        CheckConstraint("state IN ('active', 'used', 'revoked')", name="state"),
        CheckConstraint("max_minutes >= 0 AND total_minutes >= 0 AND used_minutes >= 0",
                        name="minutes"),
    )


class ConsentUse(Base):
    """Which consent paid for which redemption: an order held here, or a claim another
    district made on this one (exactly one), with the minutes held. Inserted only, in
    the transaction that makes the hold; one use per order or claim."""

    __tablename__ = "consent_uses"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    consent_id: Mapped[int] = mapped_column(ForeignKey("consents.id"), index=True)
    order_id: Mapped[int | None] = mapped_column(ForeignKey("orders.id"), unique=True)
    claim_id: Mapped[str | None] = mapped_column(String(36), unique=True)
    minutes: Mapped[int] = mapped_column(BigInteger)
    at: Mapped[datetime] = mapped_column(UtcDateTime)
    __table_args__ = (
        CheckConstraint("minutes > 0", name="positive"),
        CheckConstraint("(order_id IS NULL) <> (claim_id IS NULL)", name="order_or_claim"),
    )


class LoginAccount(Base):
    """Who may log in to the node's API (ADR 0016): a person at a desk or a phone, or a
    program. Staff are bound to a staff record, members to a person. Never deleted:
    revoked (``revoked_at``), so what an account did stays attributable."""

    __tablename__ = "login_accounts"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    login: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    staff_id: Mapped[int | None] = mapped_column(ForeignKey("staff.id"))
    person_id: Mapped[int | None] = mapped_column(ForeignKey("people.id"))
    scopes: Mapped[str] = mapped_column(String(64), default="")  # programs: "orders,read"
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    failed_attempts: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[datetime | None] = mapped_column(UtcDateTime)


class Credential(Base):
    """A secret an account proves itself with, stored hashed only: a password or a
    one-time code (argon2id, ``secret_hash``), or a session or program token (SHA-256
    of its 32 random bytes, ``token_digest``). Every credential expires but passwords
    (their account may)."""

    __tablename__ = "credentials"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("login_accounts.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # password, code, session, token
    secret_hash: Mapped[str] = mapped_column(Text, default="")
    token_digest: Mapped[bytes | None] = mapped_column(LargeBinary(32), unique=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class SettlementRow(Base):
    """A settlement statement this node has seen (issue 16, ADR 0019): one row per serial
    and revision, the clearinghouse-signed envelope as fetched (verified before it was
    stored, and again whenever it is read for posting), what this node answered (its
    countersign or dispute body, queued in the outbox) and, once final and posted, the
    ledger entry that moved the period's net out of ``clearing``. ``posted_serial`` is
    the serial once posted, NULL before: unique, so no serial is ever posted twice."""

    __tablename__ = "settlements"
    serial: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    revision: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    period: Mapped[str] = mapped_column(String(32))
    statement_sha256: Mapped[bytes] = mapped_column(LargeBinary(32))
    envelope: Mapped[bytes] = mapped_column(LargeBinary)
    state: Mapped[str] = mapped_column(String(16))
    net_minutes: Mapped[int] = mapped_column(BigInteger)
    answer_kind: Mapped[str] = mapped_column(String(32), default="", server_default="")
    answer: Mapped[bytes | None] = mapped_column(LargeBinary)
    outbox_id: Mapped[int | None] = mapped_column(Integer)
    differences: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    detail: Mapped[str] = mapped_column(Text, default="", server_default="")
    #: The Settlement (statement, countersignatures, decisions) that made it final here.
    evidence: Mapped[bytes | None] = mapped_column(LargeBinary)
    ledger_seq: Mapped[int | None] = mapped_column(BigInteger)
    posted_serial: Mapped[int | None] = mapped_column(BigInteger, unique=True)
    seen_at: Mapped[datetime] = mapped_column(UtcDateTime)
    decided_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    final_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    posted_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    __table_args__ = (
        CheckConstraint("serial >= 1 AND revision >= 1", name="serial_positive"),
        CheckConstraint("state IN ('checked', 'countersigned', 'disputed', 'final', "
                        "'posted')", name="state"),
        CheckConstraint("length(statement_sha256) = 32", name="sha256_length"),
        CheckConstraint("posted_serial IS NULL OR posted_serial = serial",
                        name="posted_serial"),
    )


class IssuedPassbook(Base):
    """A passbook the node's API signed and sent (``GetPassbook``), kept as sent so the
    file can be had again by the code printed on paper (the digest the node signed): a
    new statement made later has another digest. Inserted once per digest, never changed."""

    __tablename__ = "passbooks"
    digest: Mapped[bytes] = mapped_column(LargeBinary(32), primary_key=True)
    person_id: Mapped[int] = mapped_column(ForeignKey("people.id"), index=True)
    made_at: Mapped[datetime] = mapped_column(UtcDateTime)
    #: What the statement lacks, as its reader was told when it was made ("": nothing).
    warning: Mapped[str] = mapped_column(Text, default="", server_default="")
    statement_file: Mapped[bytes] = mapped_column(LargeBinary)
    __table_args__ = (
        CheckConstraint("length(digest) = 32", name="digest_length"),
        CheckConstraint("length(statement_file) BETWEEN 1 AND 3145728", name="file_size"),
    )
