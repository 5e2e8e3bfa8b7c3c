"""What the audit reads of a district's and of the clearinghouse's database: the tables
and columns, as data. This is the audit's documented read format; it does not import the
services' models, so it reads a database the way any outside auditor could, from the
schema the services' migrations create (node/migrations, clearinghouse/migrations).

Only the columns the audit reads are named. Times are stored as naive UTC and read back
timezone-aware; bytes come back as the driver gives them (``bytes()`` them).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    DateTime,
    Integer,
    LargeBinary,
    SmallInteger,
    String,
    Text,
    TypeDecorator,
    column,
    table,
)
from sqlalchemy.engine import Dialect


class _UtcTime(TypeDecorator[datetime]):
    """A stored naive UTC time, read back timezone-aware (SQLite keeps no zone)."""

    impl = DateTime
    cache_ok = True

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC)


# -- a district's database ---------------------------------------------------------------

accounts = table(
    "accounts",
    column("id", Integer),
    column("code", String),  # an account code, timebank.accounts
    column("balance", BigInteger),  # minutes, kept equal to the sum of its postings
)
entries = table(
    "entries",  # the hash chain, timebank.chain: one row an entry, seq 1..n
    column("seq", BigInteger),
    column("kind", String),
    column("at", _UtcTime),
    column("memo", Text),
    column("order_id", BigInteger),
    column("reverses_seq", BigInteger),  # NULL where the entry reverses none
    column("prev_hash", LargeBinary),
    column("hash", LargeBinary),
)
postings = table(
    "postings",  # an entry's postings, in order of position
    column("seq", BigInteger),
    column("position", Integer),
    column("account_id", Integer),
    column("minutes", BigInteger),
)
ledger_head = table(
    "ledger_head",  # one row: the chain's last entry
    column("seq", BigInteger),
    column("hash", LargeBinary),
)
log_anchors = table(
    "log_anchors",  # checkpoints of the chain and their leaves in the log, timebank.anchors
    column("entry_count", BigInteger),
    column("chain_head", LargeBinary),
    column("ledger_root", LargeBinary),
    column("checkpoint", LargeBinary),  # the signed envelope as sent
    column("log_index", BigInteger),  # NULL until the clearinghouse has logged it
    column("log_entry", LargeBinary),
    column("log_proof", LargeBinary),  # the inclusion path's hashes, joined
    column("tree_head", Text),  # the signed note the path proves the leaf in
)
node_meta = table(
    "meta",  # facts the node keeps as text by key, among them the tree heads it holds
    column("key", String),
    column("value", Text),
)
HELD_HEAD_KEYS = ("log.verified_head", "log.cosigned_head")
"""The ``meta`` keys under which a node keeps the last tree head it verified and the last
it cosigned, each a signed checkpoint note (node/usecases/tree_heads.py)."""
node_claims = table(
    "claims",  # the district's side of its claims with other districts
    column("claim_id", String),
    column("kind", String),
    column("role", String),  # creditor or debtor
    column("counterparty", String),
    column("minutes", BigInteger),
    column("posted_minutes", BigInteger),
    column("state", String),
)

# -- the clearinghouse's database ----------------------------------------------------------

log_leaves = table(
    "log_leaves",  # the transparency log's leaves, idx 0..n-1: serialised LogEntry
    column("idx", BigInteger),
    column("data", LargeBinary),
)
log_hashes = table(
    "log_hashes",  # the hash of every perfect aligned subtree [idx·2^level, (idx+1)·2^level)
    column("level", SmallInteger),
    column("idx", BigInteger),
    column("hash", LargeBinary),
)
tree_heads = table(
    "tree_heads",  # every head signed: a C2SP checkpoint as a signed note
    column("size", BigInteger),
    column("root", LargeBinary),
    column("note", Text),
)
cosignatures = table(
    "cosignatures",  # a district's cosignature line on the head of a size
    column("size", BigInteger),
    column("witness", String),
    column("line", Text),
    column("created_at", _UtcTime),  # when the clearinghouse took it
)
admissions = table(
    "admissions",  # each admitted district, its current key and its certificate
    column("node_id", String),
    column("district", String),
    column("public_key", LargeBinary),
    column("certificate", LargeBinary),
)
retired_keys = table(
    "retired_keys",  # keys a district had before its current one
    column("node_id", String),
    column("public_key", LargeBinary),
)
clearinghouse_claims = table(
    "claims",  # every claim between two districts
    column("claim_id", String),
    column("kind", String),
    column("creditor", String),
    column("debtor", String),
    column("minutes", BigInteger),
    column("posted_minutes", BigInteger),
    column("state", String),
)
receipts = table(
    "receipts",  # the signed receipt given for each accepted submission
    column("envelope_sha256", LargeBinary),
    column("signer", String),
    column("receipt", LargeBinary),
    column("created_at", _UtcTime),
)
positions = table(
    "positions",  # each district's net position and its open claims' totals
    column("node_id", String),
    column("net_minutes", BigInteger),
    column("open_claims", BigInteger),
    column("open_debit_minutes", BigInteger),
)
