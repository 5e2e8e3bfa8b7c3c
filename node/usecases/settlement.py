"""This node's side of settlement (issue 16, ADR 0019): check a statement, answer it,
and post it once it is final.

Nothing the clearinghouse serves is believed. A statement is acted on only once
``verify_statement`` has checked, in this order: the clearinghouse signed it under a
key the city's rotations give it (``LogKeys``), it is one well-formed statement
(``timebank.settlement.parse_statement``: every figure recomputed from the lines), and
the tree head it cites is signed by the clearinghouse, covers the period and is
cosigned by a quorum of the city-signed roster it names (``timebank.roster.cosigned_by``,
the one quorum count every reader uses). A statement that fails any of these is refused
and nothing is stored.

Then this district checks its own line against its own ledger (``decide``): the claims
the clearinghouse lists for the line must be exactly the line's totals and digest
(``line_totals_hold``) and each must be a claim this node completed, with the same
parties and minutes, not settled before (``check_line``); a claim the node completed
and no statement settled that is missing from the list must be proven (by the link,
from the log) to have completed at or after the period's end, or it is OMITTED. No
difference: a ``settlement.countersign``; else a ``settlement.dispute`` naming the
claims (at most ``MAX_DISPUTED_CLAIMS``). Either goes into the outbox in the same
transaction that records the answer, so it survives a restart and is sent once.

A statement is final when every district on it countersigned it or a city-signed
decision upheld it over their dispute (``finality``: each countersignature verified
under the key the city certified for its district, each decision under the city's key
chain). ``post`` then moves the period's net of this district's line between
``clearing`` and ``settlement`` in ONE transaction that also marks the claims settled and
records the statement posted; afterwards the clearing account holds exactly what the
claims completed and not yet settled put there (asserted). A serial is posted once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC

from google.protobuf.message import DecodeError

from node.domain.ledger import CLEARING, SETTLEMENT, Entry, EntryKind, Posting
from node.storage import settlements as rows
from node.storage.settlements import SettlementRecord
from node.usecases.app import Tx
from runtime.errors import FailedPrecondition, InvariantViolation, NotFound
from timebank import checkpoint as notes
from timebank import roster, transparency
from timebank.admissions import CityAdmissions
from timebank.citykeys import CityKeys, KeyChainError, root_key_for
from timebank.envelope import (
    CITY,
    CLEARINGHOUSE,
    EnvelopeError,
    Reason,
    decode,
    encode,
    identity,
    verify,
)
from timebank.minutes import format_hours
from timebank.settlement import (
    COUNTERSIGN_KIND,
    DECISION_KIND,
    DISPUTE_KIND,
    MAX_DISPUTED_CLAIMS,
    STATEMENT_KIND,
    Difference,
    SettledClaim,
    SettlementError,
    Statement,
    check_line,
    is_final,
    line_totals_hold,
    parse_statement,
)
from timebank.v1 import clearing_pb2 as pb

#: The most claims one district's line may list for this node to check it.
MAX_LINE_CLAIMS = 200_000
#: The most unsettled claims missing from a statement the link proves from the log in
#: one round (one inclusion proof each).
MAX_OMITTED_CHECKS = 256
#: The most countersignatures and decisions read from one answer.
MAX_ACTS = 200
#: The differences a delivery on its way explains (the ledger learns of a completion a
#: moment after the log records it): the link waits before disputing only these.
LAGGING = frozenset({"NOT_COMPLETED_HERE"})


def refuse(reason: str, chinese: str, english: str) -> FailedPrecondition:
    return FailedPrecondition(f"{chinese} / {english}", reason)


# ------------------------------------------------------------------ verifying


@dataclass(frozen=True, slots=True)
class Verified:
    """A statement whose signature, figures and cited head checked out."""

    statement: Statement
    envelope: bytes  # the signed envelope in its canonical encoding
    identity: bytes  # timebank.envelope.identity: what countersignatures name
    head: transparency.Head  # the cited head, final under ``cosigners``
    cosigners: tuple[str, ...]


def verify_statement(envelope: bytes, keys: transparency.LogKeys,
                     rosters: Callable[[bytes | None], Mapping[bytes, roster.Roster]],
                     ) -> Verified:
    """The statement ``envelope`` carries, once every check a district makes before
    acting on it has passed (see the module's docstring); FailedPrecondition naming the
    first that failed. ``rosters(digest)``: the city-signed rosters this node verified,
    refreshed first if the one named is not among them."""
    try:
        signed = decode(envelope)
    except EnvelopeError as e:
        raise refuse("MALFORMED_STATEMENT", "结算单不是一个完整的信封",
                     f"the statement is not an envelope: {e}") from None
    if signed.kind != STATEMENT_KIND or signed.signer != CLEARINGHOUSE:
        raise refuse("MALFORMED_STATEMENT", "这不是清算中心签署的结算单",
                     f"a {signed.kind!r} from {signed.signer!r} is not a statement the "
                     "clearinghouse signed")
    try:
        body = verify(signed, keys.named(signed.key_id))
    except EnvelopeError as e:
        raise refuse("STATEMENT_NOT_SIGNED", "结算单的签名无法用清算中心的密钥验证",
                     f"the statement's signature does not verify under the "
                     f"clearinghouse's key: {e}") from None
    try:
        statement = parse_statement(body)
    except SettlementError as e:
        raise refuse("BAD_STATEMENT", "结算单的数字不一致",
                     f"the statement does not hold together: {e}") from None
    try:
        head = transparency.check_head(statement.head_note, keys)
    except transparency.LogError as e:
        raise refuse("HEAD_NOT_SIGNED", "结算单引用的树头不是清算中心签署的",
                     f"the tree head the statement cites does not verify: {e}") from None
    if head.size < statement.end:
        raise refuse("HEAD_TOO_SMALL", "结算单引用的树头未覆盖整个期间",
                     f"the cited head has {head.size} leaves; the period ends at "
                     f"{statement.end}")
    try:
        found, cosigners = roster.cosigned_by(
            head, rosters(None if head.roster is None else head.roster[1]))
    except (roster.RosterError, notes.CheckpointError) as e:
        raise refuse("HEAD_NOT_FINAL", "结算单引用的树头没有城市名册多数区的联署",
                     f"the cited head is not final under a roster the city signed: {e}",
                     ) from None
    if len(cosigners) < found.quorum:
        raise refuse("HEAD_NOT_FINAL", "结算单引用的树头联署区数不足法定多数",
                     f"the cited head is cosigned by {len(cosigners)} districts; a quorum "
                     f"of roster epoch {found.epoch} is {found.quorum}")
    return Verified(statement, encode(signed), identity(signed), head, tuple(cosigners))


def statement_of(record: SettlementRecord) -> Statement:
    """The statement a stored row holds (stored only once verified)."""
    try:
        return parse_statement(decode(record.envelope).body)
    except (EnvelopeError, SettlementError) as e:
        raise InvariantViolation(f"statement {record.serial}.{record.revision} is stored "
                                 f"malformed: {e}") from None


# ------------------------------------------------------------------ what is stored


def next_serial(tx: Tx) -> int:
    """The serial this node settles next: one after the last it posted."""
    return tx.repo.settlements.last_posted_serial() + 1


def record_seen(tx: Tx, verified: Verified) -> SettlementRecord:
    """Keep a verified statement (once per serial and revision); the row as stored.
    Refused: a statement that does not follow the one this node posted before it, and
    a second statement under one serial and revision (the clearinghouse equivocates)."""
    s = verified.statement
    posted = tx.repo.settlements.posted(s.serial)
    if posted is not None:
        return posted
    if s.serial > 1:
        previous = tx.repo.settlements.posted(s.serial - 1)
        if previous is None:
            raise refuse("PREVIOUS_NOT_POSTED", f"第 {s.serial - 1} 期结算单尚未在本区入账",
                         f"statement {s.serial - 1} is not posted here yet")
        if s.previous_sha256 != previous.statement_sha256:
            raise refuse("CHAIN_BROKEN", "结算单没有接续本区已入账的上一期",
                         f"statement {s.serial} does not name statement {s.serial - 1} as "
                         "this node posted it")
        if s.start != statement_of(previous).end:
            raise refuse("PERIOD_GAP", "本期的日志区间没有紧接上一期",
                         f"statement {s.serial} starts at leaf {s.start}; statement "
                         f"{s.serial - 1} ended at {statement_of(previous).end}")
    found = tx.repo.settlements.get(s.serial, s.revision)
    if found is not None:
        if found.statement_sha256 != verified.identity:
            raise refuse("EQUIVOCATION", "清算中心对同一期同一版本出示了两份不同的结算单",
                         f"two different statements {s.serial}.{s.revision}: the "
                         "clearinghouse showed this node another one before")
        return found
    line = s.sheet.line(tx.node.node_id)
    tx.repo.settlements.add(s.serial, s.revision, s.period, verified.identity,
                            verified.envelope, 0 if line is None else line.net_minutes, tx.now)
    stored = tx.repo.settlements.get(s.serial, s.revision)
    assert stored is not None
    return stored


@dataclass(frozen=True, slots=True)
class Candidates:
    """Claims this node completed that no statement settled and the list lacks: each
    must be proven from the log to have completed at or after the period's end."""

    claim_ids: tuple[str, ...]
    more: bool  # more than ``limit`` of them: the rest are not checked this round


def unsettled_candidates(tx: Tx, listed: Sequence[str], limit: int = MAX_OMITTED_CHECKS,
                         ) -> Candidates:
    if not 0 < limit <= MAX_OMITTED_CHECKS or len(listed) > 2 * MAX_LINE_CLAIMS:
        raise InvariantViolation("unsettled claims are checked in bounded rounds")
    skip = set(listed)
    found = [c.claim_id for c in tx.repo.settlements.unsettled(
        tx.node.node_id, len(skip) + limit + 1) if c.claim_id not in skip]
    return Candidates(tuple(found[:limit]), len(found) > limit)


# ------------------------------------------------------------------ answering


def decide(tx: Tx, serial: int, revision: int, listed: Sequence[SettledClaim],
           omitted: Sequence[str] = (), unproven: int = 0, *,
           wait_for_lag: bool = False) -> SettlementRecord:
    """Check this district's line of a stored statement against its ledger and answer:
    countersign, or dispute with every claim that differs. ``listed``: the claims the
    clearinghouse lists for the line; ``omitted``: claims proven from the log to have
    completed before the period's end that the list lacks; ``unproven``: candidates not
    proven either way (then nothing is countersigned yet). ``wait_for_lag``: leave a
    statement whose only differences are claims not completed here yet (a delivery on
    its way) undecided. Decides once; later calls return the row as it stands."""
    record = tx.repo.settlements.get(serial, revision)
    if record is None:
        raise InvariantViolation(f"statement {serial}.{revision} was not recorded")
    if record.state != rows.CHECKED:
        return record
    statement = statement_of(record)
    node_id = tx.node.node_id
    line = statement.sheet.line(node_id)
    if line is None:
        return record  # not a party: nothing to answer
    if len(listed) > MAX_LINE_CLAIMS or len(omitted) > MAX_OMITTED_CHECKS:
        raise InvariantViolation("a line is checked against a bounded list")
    ledger = tx.repo.settlements.ledger_claims(
        node_id, [c.claim_id for c in listed] + list(omitted))
    differences = check_line(node_id, line, listed, ledger, omitted)
    totals = line_totals_hold(node_id, line, listed)
    if not differences and totals and unproven:
        detail = (f"尚有 {unproven} 笔未结算的已完成请求未能从日志证明其完成于期末之后，暂不会签 / "
                  f"{unproven} completed claims not yet proven to have completed at or "
                  "after the period's end: not countersigned yet")
        if detail != record.detail:
            tx.repo.settlements.advance(record, rows.CHECKED, detail=detail)
        return tx.repo.settlements.get(serial, revision) or record
    if wait_for_lag and totals and differences and all(d.reason in LAGGING
                                                       for d in differences):
        return record
    at = tx.now.astimezone(UTC)
    answer: pb.SettlementCountersign | pb.SettlementDispute
    if not differences and totals:
        answer = pb.SettlementCountersign(node_id=node_id, serial=serial, revision=revision,
                                          statement_sha256=record.statement_sha256)
        answer.at.FromDatetime(at)
        kind, state, detail = COUNTERSIGN_KIND, rows.COUNTERSIGNED, ""
    else:
        detail = "" if totals else _totals_detail(node_id, line.owed_minutes,
                                                  line.owing_minutes, line.claims, listed)
        answer = _dispute(node_id, serial, revision, record.statement_sha256, differences,
                          detail)
        answer.at.FromDatetime(at)
        kind, state = DISPUTE_KIND, rows.DISPUTED
    body = answer.SerializeToString(deterministic=True)
    outbox_id = tx.repo.outbox.enqueue(kind, None, body, tx.now)
    tx.repo.settlements.advance(record, state, answer_kind=kind, answer=body,
                                outbox_id=outbox_id, differences=len(differences),
                                detail=detail, decided_at=tx.now)
    found = tx.repo.settlements.get(serial, revision)
    assert found is not None
    return found


#: The outbox kinds of this node's answers to a statement.
ANSWER_KINDS = frozenset({COUNTERSIGN_KIND, DISPUTE_KIND})


def answer_refused(tx: Tx, message_id: int, reason: str, message: str) -> None:
    """The clearinghouse refused this node's countersign or dispute for good (say, a
    revision issued meanwhile: STALE_REVISION): the statement says so to the operator;
    the next revision, if any, is checked and answered on its own."""
    record = tx.repo.settlements.answered_by(message_id)
    if record is None:
        return
    detail = (f"清算中心拒收了本区的答复 / the clearinghouse refused this node's answer: "
              f"{reason[:32]}: {message[:300]}")
    tx.repo.settlements.advance(record, record.state, detail=detail)


def _dispute(node_id: str, serial: int, revision: int, statement_sha256: bytes,
             differences: Sequence[Difference], detail: str) -> pb.SettlementDispute:
    assert len(differences) <= MAX_DISPUTED_CLAIMS
    return pb.SettlementDispute(
        node_id=node_id, serial=serial, revision=revision, statement_sha256=statement_sha256,
        claims=[pb.DisputedClaim(claim_id=d.claim_id, reason=d.reason,
                                 statement_minutes=d.statement_minutes,
                                 ledger_minutes=d.ledger_minutes) for d in differences],
        detail=detail[:500])


def _totals_detail(node_id: str, owed: int, owing: int, claims: int,
                   listed: Sequence[SettledClaim]) -> str:
    got_owed = sum(c.minutes for c in listed if c.creditor == node_id)
    got_owing = sum(c.minutes for c in listed if c.debtor == node_id)
    return (f"本区行的合计与清算中心列出的请求不符 / the line's totals are not those of the "
            f"claims listed for it: line owed {owed}, owing {owing}, {claims} claims; listed "
            f"owed {got_owed}, owing {got_owing}, {len(listed)} claims (or their digest "
            "differs)")


# ------------------------------------------------------------------ final


@dataclass(frozen=True, slots=True)
class Finality:
    """Who made a statement final: the districts whose countersignature verified, those
    a city-signed decision overruled, and what was refused (forged or malformed acts)."""

    final: bool
    countersigned: tuple[str, ...]
    overruled: tuple[str, ...]
    refused: tuple[str, ...]


def finality(verified: Verified, found: pb.GetSettlementResponse, city: CityAdmissions,
             city_keys: CityKeys) -> Finality:
    """Whether the statement is final, by this node's own checks of every act on it:
    a countersignature counts only under the key the city certified for the district it
    names (and never revoked), for exactly this statement; a decision only under the
    city's key chain, upholding exactly this statement."""
    s = verified.statement
    countersigned: set[str] = set()
    overruled: set[str] = set()
    refused: list[str] = []
    for raw in list(found.countersigns)[:MAX_ACTS]:
        try:
            signed = decode(raw)
            if signed.kind != COUNTERSIGN_KIND:
                raise EnvelopeError(Reason.MALFORMED, f"a {signed.kind!r} among countersignatures")
            msg = pb.SettlementCountersign.FromString(city.verify(signed))
        except (EnvelopeError, DecodeError) as e:
            refused.append(f"countersignature: {e}")
            continue
        if msg.node_id != signed.signer:
            refused.append(f"countersignature signed by {signed.signer} for {msg.node_id}")
            continue
        if (msg.serial, msg.revision, msg.statement_sha256) == (s.serial, s.revision,
                                                                 verified.identity):
            countersigned.add(msg.node_id)
    for raw in list(found.decisions)[:MAX_ACTS]:
        try:
            signed = decode(raw)
            if signed.kind != DECISION_KIND or signed.signer != CITY:
                raise EnvelopeError(Reason.MALFORMED, "a decision is the city's")
            decision = pb.SettlementDecision.FromString(
                verify(signed, root_key_for(city_keys, signed)))
        except (EnvelopeError, DecodeError, KeyChainError) as e:
            refused.append(f"decision: {e}")
            continue
        if (decision.serial, decision.revision, decision.statement_sha256) == (
                s.serial, s.revision, verified.identity) and not decision.revise:
            overruled.update(decision.overruled_node_ids)
    districts = [x.node_id for x in s.sheet.lines]
    return Finality(is_final(districts, countersigned, overruled), tuple(sorted(countersigned)),
                    tuple(sorted(overruled & set(districts))), tuple(refused))


def mark_final(tx: Tx, serial: int, revision: int, evidence: bytes) -> SettlementRecord:
    """Record that a statement is final here (``evidence``: the Settlement that showed
    it, its acts verified by ``finality``)."""
    record = tx.repo.settlements.get(serial, revision)
    if record is None:
        raise InvariantViolation(f"statement {serial}.{revision} was not recorded")
    if record.state in (rows.FINAL, rows.POSTED):
        return record
    tx.repo.settlements.advance(record, rows.FINAL, evidence=evidence, final_at=tx.now)
    found = tx.repo.settlements.get(serial, revision)
    assert found is not None
    return found


@dataclass(frozen=True, slots=True)
class Posted:
    """What posting a final statement did here."""

    serial: int
    revision: int
    net_minutes: int
    ledger_seq: int | None  # None when the net was zero: nothing to move
    claims_settled: int
    clearing_after: int
    already: bool = False  # it was posted before: nothing was done now


def post(tx: Tx, serial: int, revision: int, listed: Sequence[SettledClaim], *,
         overruled: bool = False) -> Posted:
    """Post a final statement, in this one transaction: the period's net of this
    district's line moves from ``clearing`` to ``settlement``, every claim listed is
    marked settled by ``serial`` and the statement is recorded posted. Once per serial:
    posting again returns what was posted. ``overruled``: a city-signed decision made it
    final over this district (which disputed it, or never answered): posted as decided,
    whatever this ledger says."""
    done = tx.repo.settlements.posted(serial)
    if done is not None:
        return Posted(serial, done.revision, done.net_minutes, done.ledger_seq,
                      tx.repo.settlements.settled_by(serial), _clearing(tx), already=True)
    record = tx.repo.settlements.get(serial, revision)
    if record is None or record.state != rows.FINAL:
        raise FailedPrecondition("结算单尚未最终确定，不能入账 / the statement is not final here: "
                                 "it cannot be posted", "NOT_FINAL")
    statement = statement_of(record)
    node_id = tx.node.node_id
    line = statement.sheet.line(node_id)
    if len(listed) > MAX_LINE_CLAIMS:
        raise InvariantViolation("a line is posted from a bounded list")
    if line is not None and not line_totals_hold(node_id, line, listed):
        raise refuse("LINE_MISMATCH", "清算中心列出的请求与本区行的合计不符，不能入账",
                     "the claims listed are not the line's: not posted")
    overruled = overruled or record.answer_kind == DISPUTE_KIND  # final over this node
    net = 0 if line is None else line.net_minutes
    if not overruled and line is not None:
        ledger = tx.repo.settlements.ledger_claims(node_id, [c.claim_id for c in listed])
        if check_line(node_id, line, listed, ledger):
            raise InvariantViolation(f"statement {serial}, final with this district's "
                                     "agreement, does not match this node's ledger")
    before = _clearing(tx)
    seq: int | None = None
    if net:
        memo = (f"结算 {statement.period} 第 {serial} 期 / settlement {serial}.{revision} "
                f"({statement.period}): {'owed to' if net > 0 else 'owed by'} this district "
                f"{format_hours(abs(net))}, moved out of clearing")
        entry = Entry(EntryKind.SETTLEMENT, (Posting(CLEARING, net), Posting(SETTLEMENT, -net)),
                      tx.now, memo=memo)
        if sum(p.minutes for p in entry.postings) != 0:
            raise InvariantViolation("a settlement entry sums to zero")
        seq = tx.repo.ledger.append(entry, {}).seq
    settled = tx.repo.settlements.settle([c.claim_id for c in listed], serial)
    after = _clearing(tx)
    if after != before + net:
        raise InvariantViolation("the settlement moved another amount through clearing")
    if not overruled:
        if settled != len(listed):
            raise InvariantViolation(f"statement {serial} settles {len(listed)} claims; "
                                     f"{settled} were completed and unsettled here")
        carried = tx.repo.settlements.unsettled_net()
        if after != -carried:
            raise InvariantViolation(
                f"after statement {serial} the clearing account holds {after} min; the "
                f"claims completed and not yet settled carry {carried} min (it must be "
                "minus that)")
    detail = record.detail
    if overruled:
        detail = (f"本区的异议被市局决定驳回，按结算单入账 / posted as the city decided over "
                  f"this district's dispute; the clearing account now holds {after} min "
                  f"({settled} of {len(listed)} listed claims were settled here)")
    tx.repo.settlements.advance(record, rows.POSTED, posted_serial=serial, ledger_seq=seq,
                                posted_at=tx.now, detail=detail)
    return Posted(serial, revision, net, seq, settled, after)


def _clearing(tx: Tx) -> int:
    found = tx.repo.ledger.account(CLEARING.code)
    return 0 if found is None else found.balance


# ------------------------------------------------------------------ reads


@dataclass(frozen=True, slots=True)
class Shown:
    """A statement as ``timebank node settlement show`` prints it."""

    record: SettlementRecord
    statement: Statement
    evidence: pb.GetSettlementResponse | None
    last_posted: int
    clearing: int
    unsettled_net: int


def show(tx: Tx, serial: int = 0) -> Shown:
    """The statement ``serial`` (0: the latest seen) as this node holds it."""
    if serial < 0 or serial >= 2**63:
        raise refuse("BAD_SERIAL", "期号无效", "a serial is a positive number")
    found = (tx.repo.settlements.latest() if serial == 0
             else tx.repo.settlements.latest_of(serial))
    if found is None:
        raise NotFound("本区尚未收到任何结算单 / this node has seen no settlement statement"
                       + ("" if serial == 0 else f" {serial}"), "NO_STATEMENT")
    evidence = None
    if found.evidence:
        try:
            evidence = pb.GetSettlementResponse.FromString(found.evidence)
        except DecodeError:
            evidence = None
    return Shown(found, statement_of(found), evidence,
                 tx.repo.settlements.last_posted_serial(), _clearing(tx),
                 tx.repo.settlements.unsettled_net())


__all__ = ["ANSWER_KINDS", "MAX_LINE_CLAIMS", "MAX_OMITTED_CHECKS", "Candidates", "Finality",
           "Posted", "SettlementRecord", "Shown", "Verified", "answer_refused", "decide",
           "finality", "mark_final", "next_serial", "post", "record_seen", "show",
           "statement_of", "unsettled_candidates", "verify_statement"]
