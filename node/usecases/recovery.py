"""What this node's database lacks that the city's log shows the node said (issue 17).

Everything a node tells the city goes through its outbox, signed, and the clearinghouse
logs it: its ledger checkpoints (entry count and chain head) and its side of every
claim. A database restored from a backup older than the node's last words to the city
therefore shows in the log: a checkpoint anchoring more entries than the ledger holds
(or a chain head the ledger no longer reaches), and leaves signed by this node whose
message the outbox does not hold. ``compare`` says exactly which; the node refuses to
serve on such a database (its next entries would fork its own anchored chain) and
``timebank node check`` and ``timebank node recover`` show the same report.

The leaves come from the clearinghouse's log (``node.link.logscan``); a checkpoint
signed by this node's own key is verified here under that key, so a clearinghouse
cannot make a node refuse to start with an anchor it never signed. What a log leaf
cannot give back: the content of a purely local ledger entry (the log holds only the
chain head and the ledger root over the entries' hashes). Those come back only from a
newer backup.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from node.usecases.app import Tx, city_time

#: The most leaves of each sort a report lists (the counts are always exact).
MAX_LISTED = 200


@dataclass(frozen=True, slots=True)
class LoggedCheckpoint:
    """A checkpoint of this node's ledger as a log leaf records it."""

    index: int  # the leaf
    at: datetime  # when the clearinghouse logged it
    entry_count: int
    chain_head: bytes
    verified: bool  # its signature checked under the key this node runs with


@dataclass(frozen=True, slots=True)
class LoggedMessage:
    """Something else this node signed and the log recorded (a claim's step, a
    registration, a settlement countersignature), with what the leaf says of its claim."""

    index: int
    at: datetime
    kind: str  # the envelope kind, as the outbox names it
    body: bytes
    claim_id: str
    claim_kind: str  # "move", "redemption" or ""
    state: str  # the claim state the leaf records ("" if not a claim)
    minutes: int
    counterparty: str


@dataclass(frozen=True, slots=True)
class Divergence:
    """How this node's database stands against its words in the log."""

    node_id: str
    ledger_count: int  # entries the database holds
    scanned: tuple[int, int]  # leaves [from, to) read
    #: Anchored checkpoints beyond the ledger: entries the database lacks.
    beyond: tuple[LoggedCheckpoint, ...]
    #: Anchored checkpoints within the ledger whose chain head it no longer reaches.
    rewritten: tuple[LoggedCheckpoint, ...]
    #: Messages this node signed that the log holds and its outbox does not.
    unknown: tuple[LoggedMessage, ...]
    #: Of the claims those name, the ones the database does not hold at all.
    claims_missing: tuple[str, ...]
    #: Claims of this node's that only another district has spoken of since, and that
    #: the database does not hold: delivered again when the node serves.
    incoming: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not (self.beyond or self.rewritten or self.unknown)

    @property
    def missing_entries(self) -> tuple[int, int] | None:
        """The sequence numbers of the entries anchored and not held (first, last)."""
        if not self.beyond:
            return None
        return self.ledger_count + 1, max(c.entry_count for c in self.beyond)

    def summary(self) -> str:
        """One line, Chinese then English, for a refusal at start."""
        if self.ok:
            return "数据库与城市日志一致 / the database agrees with the city's log"
        parts_zh, parts_en = [], []
        missing = self.missing_entries
        if missing is not None:
            last = max(self.beyond, key=lambda c: c.entry_count)
            parts_zh.append(f"缺少账本条目 {missing[0]}–{missing[1]}（已锚定于日志第 {last.index} "
                            f"条，{city_time(last.at)}）")
            parts_en.append(f"ledger entries {missing[0]}-{missing[1]} are missing (anchored "
                            f"at log leaf {last.index}, {city_time(last.at)})")
        if self.rewritten:
            first = self.rewritten[0]
            parts_zh.append(f"账本在第 {first.entry_count} 条处与日志锚点不符")
            parts_en.append(f"the ledger differs from its anchor of {first.entry_count} "
                            f"entries (log leaf {first.index})")
        if self.unknown:
            parts_zh.append(f"日志中有 {len(self.unknown)} 条本节点签署、数据库却没有的消息"
                            f"（涉及 {len(self.claims_missing)} 笔本地没有的跨区声明）")
            parts_en.append(f"{len(self.unknown)} messages this node signed are in the log "
                            f"and not in its database ({len(self.claims_missing)} claims it "
                            "does not hold at all)")
        return ("数据库比本节点在城市日志中的记录旧（可能恢复了旧备份）：" + "；".join(parts_zh)
                + "。 / This node's database is older than what the node told the city's "
                "log (an older backup restored?): " + "; ".join(parts_en) + ".")

    def json(self) -> dict[str, Any]:
        missing = self.missing_entries
        return {
            "ok": self.ok, "node_id": self.node_id, "ledger_entries": self.ledger_count,
            "scanned_leaves": list(self.scanned),
            "missing_entries": None if missing is None else {
                "first_seq": missing[0], "last_seq": missing[1]},
            "anchors_beyond": [_checkpoint_json(c) for c in self.beyond[:MAX_LISTED]],
            "anchors_rewritten": [_checkpoint_json(c) for c in self.rewritten[:MAX_LISTED]],
            "messages_missing": [_message_json(m) for m in self.unknown[:MAX_LISTED]],
            "messages_missing_count": len(self.unknown),
            "claims_missing": list(self.claims_missing[:MAX_LISTED]),
            "claims_missing_count": len(self.claims_missing),
            "claims_delivered_again": list(self.incoming[:MAX_LISTED]),
            "claims_delivered_again_count": len(self.incoming),
        }


def _checkpoint_json(c: LoggedCheckpoint) -> dict[str, Any]:
    return {"log_index": c.index, "at": c.at.isoformat(), "entry_count": c.entry_count,
            "chain_head": c.chain_head.hex(), "signature_checked": c.verified}


def _message_json(m: LoggedMessage) -> dict[str, Any]:
    return {"log_index": m.index, "at": m.at.isoformat(), "kind": m.kind,
            "claim_id": m.claim_id, "claim_kind": m.claim_kind, "state": m.state,
            "minutes": m.minutes, "counterparty": m.counterparty}


def scan_start(tx: Tx, verified_size: int | None) -> int:
    """The first leaf that can hold what this database does not know: the log as it
    stood when the database last verified a head, or just after its latest anchor,
    whichever is earlier (0 for a database that never did either)."""
    latest = tx.repo.anchors.latest()
    starts = [s for s in (verified_size, None if latest is None else latest.log_index + 1)
              if s is not None]
    return min(starts, default=0)


def compare(tx: Tx, checkpoints: list[LoggedCheckpoint], messages: list[LoggedMessage],
            scanned: tuple[int, int], others: list[str] | None = None) -> Divergence:
    """How the database stands against the leaves this node signed in ``scanned``
    (``others``: the claims of this node's other districts' leaves there name)."""
    count, _ = tx.repo.ledger.head()
    beyond, rewritten = [], []
    for c in checkpoints:
        if c.entry_count > count:
            beyond.append(c)
        elif c.entry_count > 0:
            held = tx.repo.ledger.entry(c.entry_count)
            if held is None or bytes(held.hash) != c.chain_head:
                rewritten.append(c)
    unknown = [m for m in messages
               if not tx.repo.outbox.holds(m.kind, m.body, m.claim_id or None)]
    missing_claims = tuple(dict.fromkeys(
        m.claim_id for m in unknown if m.claim_id and tx.repo.claims.get(m.claim_id) is None))
    ours = {m.claim_id for m in messages}
    incoming = tuple(c for c in dict.fromkeys(others or ())
                     if c not in ours and tx.repo.claims.get(c) is None)
    return Divergence(tx.node.node_id, count, scanned, tuple(beyond), tuple(rewritten),
                      tuple(unknown), missing_claims, incoming)


