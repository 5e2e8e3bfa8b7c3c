"""Settlement periods at the clearinghouse (issue 16): close a period, take the districts'
countersignatures and disputes, the bureau's decisions and defaults.

The figures are the contract's (``timebank.settlement.compute``); this module decides
*which* claims a statement settles, signs and logs it, and keeps the running positions
in step, each in one transaction under the write lock:

* ``close``: a period ends at a log size ``end`` (a calendar month: the first leaf
  stamped at or after its end in city time; or a size given). Every completed claim
  whose completing leaf is below ``end`` and that no statement settled is settled now,
  by one UPDATE; the claims are then read back streamed, by claim id, into ``compute``.
  The statement cites the smallest tree head of ``end`` leaves or more cosigned by a
  quorum of the city-signed roster, is signed with the clearinghouse key and logged as
  a ``settlement`` leaf; each district's running position loses the period's net, so
  net debit limits count from the new period. Statement S+1 closes only once S is final.
* ``countersign`` / ``dispute``: a district's signed side, through Submit (the leaf is
  the Submit's; the act is stored under it, ``PendingAct``).
* ``decide``: a city-signed decision on a disputed revision: uphold (final without the
  overruled districts) or revise (revision + 1 without the excluded claims, which go
  back to the open period and into its positions).
* ``default``: a city-signed act on a final statement for a district that did not
  settle its debit; the treatment is the one the statement's policy set (carry: the
  unpaid debit opens the next statement).

Nothing is unwound: every act is a logged leaf, a revision is a new statement beside the
old, and a refusal changes nothing (bilingual message, stable reason).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from clearinghouse.storage.settlements import ActRecord, ClaimRef, StatementRecord
from clearinghouse.usecases import admission, directory, log, wire
from clearinghouse.usecases.app import Tx
from runtime.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    InvariantViolation,
    NotFound,
    PermissionDenied,
    Refusal,
)
from timebank import citypolicy
from timebank import settlement as st
from timebank.envelope import KeyRing, Signed, identity
from timebank.ids import is_node_id
from timebank.policy import OnDefault, PolicyError, Schedule, SettlementRules, load_policy
from timebank.v1 import clearing_pb2 as pb

COUNTERSIGN = st.COUNTERSIGN_KIND
DISPUTE = st.DISPUTE_KIND
DECISION = st.DECISION_KIND
DEFAULT = st.DEFAULT_KIND
#: The most characters of a dispute's detail, a decision's or a default's reason.
MAX_TEXT = 1000
#: The most claims one revising decision leaves out.
MAX_EXCLUDED = st.MAX_DISPUTED_CLAIMS * st.MAX_DISTRICTS
#: A countersign or dispute body; a dispute of 256 claims fits well inside.
MAX_ACT_BODY = 48 * 1024

#: Signs a body of a kind with the clearinghouse key.
Sign = Callable[[str, bytes], Signed]


# refusals ------------------------------------------------------------------------------

def _refused(e: st.SettlementError) -> InvalidArgument:
    return InvalidArgument(f"结算数据无效 / {e.message}", e.reason)


# what is stored, read back -------------------------------------------------------------

def _parse(record: StatementRecord) -> st.Statement:
    """A stored statement (it was built and checked by this module)."""
    try:
        return st.parse_statement(wire.from_bytes(record.envelope).body)
    except st.SettlementError as e:  # pragma: no cover - stored rows were checked
        raise InvariantViolation(f"stored statement {record.serial}/{record.revision}: "
                                 f"{e}") from e


def _claims(tx: Tx, serial: int) -> Iterator[st.SettledClaim]:
    """The claims statement ``serial`` settles, streamed by claim id (``compute`` takes
    them ``presorted``: nothing of them is kept)."""
    return tx.repo.settlements.stream(serial)


@dataclass(frozen=True, slots=True)
class Rules:
    """What the city policy in force says of settlement, and its digest."""

    policy_sha256: bytes
    rules: SettlementRules


def rules_in_force(tx: Tx, at: datetime | None = None) -> Rules:
    """The ``[settlement]`` rules of the city policy in force at ``at`` (now); the
    defaults (no money, carry, manual) before the city's first policy."""
    found = citypolicy.in_force(tx.repo.city_policies(), at or tx.now)
    if found is None:
        return Rules(b"", SettlementRules())
    body = pb.CityPolicy.FromString(wire.from_bytes(found.envelope).body)
    try:
        return Rules(found.sha256, load_policy(body.policy_toml).settlement)
    except PolicyError as e:  # pragma: no cover - the policy was checked when issued
        raise InvariantViolation(f"stored policy {found.serial}: {e}") from e


@dataclass(frozen=True, slots=True)
class Closed:
    """A statement (revision) just made: what it says, its envelope and its leaf."""

    statement: st.Statement
    envelope: Signed
    log_index: int
    final: bool


# closing -------------------------------------------------------------------------------

def _end_of(tx: Tx, period: st.Period) -> int:
    """Where a calendar month ends in the log: the first leaf stamped at or after its
    end (the log's size if none is yet). Refused while the month has not ended."""
    assert period.ends is not None
    if tx.now < period.ends:
        raise FailedPrecondition(
            f"期间 {period.label} 尚未结束（结束于 {period.ends.isoformat()}）/ the period "
            f"{period.label} has not ended yet (it ends at {period.ends.isoformat()})",
            "PERIOD_NOT_ENDED")
    found = tx.repo.settlements.first_leaf_from(period.ends)
    return log.log_of(tx).size() if found is None else found


def _openings(tx: Tx, previous: StatementRecord | None) -> dict[str, int]:
    """What each district carries in: its unpaid debit, where the bureau declared a
    default with treatment carry on the previous statement."""
    out: dict[str, int] = {}
    if previous is None:
        return out
    for act in tx.repo.settlements.acts(previous.serial):
        if act.kind == DEFAULT:
            msg = pb.SettlementDefault.FromString(wire.from_bytes(act.envelope).body)
            if msg.treatment == OnDefault.CARRY.value:
                out[msg.node_id] = out.get(msg.node_id, 0) - msg.unpaid_minutes
    return out


def _districts(tx: Tx) -> list[str]:
    """Every district ever admitted (a revoked one still owes or is owed)."""
    return [a.node_id for a in tx.repo.admissions()]


def _take_out_of_positions(tx: Tx, sheet: st.Sheet, sign: int) -> None:
    """Move the running positions by ``sign`` × each line's period net, then check them
    against the claims left in the open period: net debit limits count from it."""
    tx.repo.settlements.add_to_positions({x.node_id: sign * x.net_minutes
                                          for x in sheet.lines})
    check_positions(tx)


def check_positions(tx: Tx) -> None:
    """Invariants of the running positions under settlement: they sum to zero, and each
    is its district's net over the completed claims no statement settled."""
    stored = tx.repo.net_positions()
    if sum(stored.values()) != 0:
        raise InvariantViolation(f"net positions sum to {sum(stored.values())}, not zero")
    expected = tx.repo.settlements.unsettled_nets()
    for node_id in set(stored) | set(expected):
        if stored.get(node_id, 0) != expected.get(node_id, 0):
            raise InvariantViolation(
                f"district {node_id}: running position {stored.get(node_id, 0)}, its "
                f"unsettled completed claims give {expected.get(node_id, 0)}")


def _issue(tx: Tx, sign: Sign, statement: st.Statement, final: bool) -> Closed:
    """Sign, log and store a statement revision."""
    envelope = sign(st.STATEMENT_KIND, st.statement_body(statement))
    index = log.record_settlement(tx, envelope)
    tx.repo.settlements.insert_statement(StatementRecord(
        statement.serial, statement.revision, statement.period, statement.start,
        statement.end, identity(envelope), wire.to_bytes(envelope), index,
        statement.closed_at, final))
    return Closed(statement, envelope, index, final)


def close(tx: Tx, sign: Sign, *, period: str | None = None, up_to: int | None = None,
          label: str | None = None) -> Closed:
    """Close a settlement period: a calendar month (``period``, ``YYYY-MM``) or the log
    up to ``up_to`` leaves (named ``label``, default ``log-<up_to>``).

    INVALID_ARGUMENT BAD_PERIOD: neither or both, a malformed month or label.
    ALREADY_EXISTS ALREADY_CLOSED: a statement has that label. FAILED_PRECONDITION:
    PERIOD_NOT_ENDED (a month not over, a size beyond the log), BEFORE_LAST_CLOSED (it
    would end before the last statement's end, or name an earlier month),
    PREVIOUS_NOT_FINAL (the last statement waits for countersignatures or a decision),
    NO_QUORUM_HEAD (no tree head of ``end`` leaves or more is cosigned by a quorum of
    the city's roster yet)."""
    if (period is None) == (up_to is None):
        raise InvalidArgument("给出 --period 或 --up-to 之一 / give a period (YYYY-MM) or a "
                              "log size, one of them", "BAD_PERIOD")
    size = log.log_of(tx).size()
    try:
        if period is not None:
            named = st.month_period(period)
        else:
            assert up_to is not None
            named = st.Period(label or f"log-{up_to}")
    except st.SettlementError as e:
        raise InvalidArgument(f"期间无效 / {e.message}", "BAD_PERIOD") from None
    settlements = tx.repo.settlements
    if settlements.serial_of(named.label) is not None:
        raise AlreadyExists(f"期间 {named.label} 已结算 / the period {named.label} is closed "
                            "already; `settle show` shows its statement", "ALREADY_CLOSED")
    if period is not None:
        end = _end_of(tx, named)
    else:
        assert up_to is not None
        if isinstance(up_to, bool) or not 0 <= up_to <= size:
            raise FailedPrecondition(
                f"日志只有 {size} 条，不能结算到 {up_to} / the log holds {size} leaves; a "
                f"period cannot end at {up_to}", "PERIOD_NOT_ENDED")
        end = up_to
    previous = settlements.latest()
    start = 0 if previous is None else previous.end
    if previous is not None:
        earlier_month = (period is not None and st.is_month(previous.period)
                         and named.label <= previous.period)
        if end < start or earlier_month:
            raise FailedPrecondition(
                f"期间 {named.label} 早于已结算的 {previous.period}（日志 {start}）/ the "
                f"period {named.label} would end before the last closed one, "
                f"{previous.period} (log leaf {start})", "BEFORE_LAST_CLOSED")
        if not previous.final:
            raise FailedPrecondition(
                f"上一期结算单 {previous.serial}（{previous.period}）尚未定稿 / statement "
                f"{previous.serial} ({previous.period}) is not final yet: every district "
                "countersigns it, or the bureau decides its disputes", "PREVIOUS_NOT_FINAL")
    head = log.quorum_head_from(tx, max(end, 1))
    if head is None:
        raise FailedPrecondition(
            f"还没有经多数区会签、覆盖 {end} 条日志的树头 / no tree head of {end} leaves or "
            "more is cosigned by a quorum of the city's roster yet; wait for the "
            "districts to witness the log", "NO_QUORUM_HEAD")
    serial = 1 if previous is None else previous.serial + 1
    rules = rules_in_force(tx)
    settled = settlements.settle(serial, end)
    try:
        sheet = st.compute(_claims(tx, serial), _districts(tx),
                           openings=_openings(tx, previous),
                           rate_fen_per_hour=rules.rules.rate_fen_per_hour, presorted=True)
    except st.SettlementError as e:  # more districts than a statement holds, say
        raise FailedPrecondition(f"无法结算 {named.label} / {e.message}", e.reason) from None
    if sheet.claims != settled:
        raise InvariantViolation(f"closing {named.label}: {settled} claims marked, "
                                 f"{sheet.claims} read back")
    statement = st.Statement(
        serial, 1, named.label, start, end, head.note, tx.now,
        b"" if previous is None else previous.statement_sha256, rules.policy_sha256,
        rules.rules.on_default.value, sheet)
    _take_out_of_positions(tx, sheet, -1)
    return _issue(tx, sign, statement,
                  st.is_final([x.node_id for x in sheet.lines], (), ()))


def due(tx: Tx) -> str | None:
    """The month the schedule would close now, if any: when the city policy in force
    says ``monthly``, the previous month (city time) once day ``close_after_days`` of
    this one has begun, unless a statement has its label. A read."""
    rules = rules_in_force(tx).rules
    if rules.schedule is not Schedule.MONTHLY:
        return None
    month = st.previous_month(tx.now)
    assert month.ends is not None
    if tx.now < month.ends + timedelta(days=rules.close_after_days - 1):
        return None
    if tx.repo.settlements.serial_of(month.label) is not None:
        return None
    return month.label


def close_due(tx: Tx, sign: Sign) -> Closed | None:
    """The schedule's close (``due``), or nothing (None) while it is not due or cannot
    close yet (no quorum head, the last statement not final: the next round tries
    again). Idempotent and safe beside other replicas: it checks again under the write
    lock, so a month another replica closed meanwhile is left alone."""
    label = due(tx)
    if label is None:
        return None
    try:
        return close(tx, sign, period=label)
    except Refusal:
        return None  # not yet (no quorum head, the last one not final): next round


# a district's side, through Submit ----------------------------------------------------------

@dataclass(frozen=True, slots=True)
class PendingAct:
    """A countersign or dispute checked and ready: Submit logs its envelope, then stores
    it under that leaf (``record``) and sees whether the revision became final."""

    kind: str
    serial: int
    revision: int
    node_id: str
    envelope: bytes

    def record(self, tx: Tx, index: int) -> None:
        tx.repo.settlements.insert_act(ActRecord(index, self.serial, self.revision,
                                                 self.kind, self.node_id, self.envelope,
                                                 tx.now))
        _update_final(tx, self.serial)


def _latest(tx: Tx, serial: int, revision: int, statement_sha256: bytes
            ) -> StatementRecord:
    """The statement revision an act names, which must be the latest."""
    found = tx.repo.settlements.latest(serial) if serial >= 1 else None
    if found is None or revision < 1 or revision > found.revision:
        raise NotFound(f"没有结算单 {serial} 第 {revision} 版 / there is no statement "
                       f"{serial} revision {revision}", "UNKNOWN_STATEMENT")
    if revision < found.revision:
        raise FailedPrecondition(
            f"结算单 {serial} 已修订为第 {found.revision} 版 / statement {serial} was revised: "
            f"revision {found.revision} replaces {revision}; check it again",
            "STALE_REVISION")
    if statement_sha256 != found.statement_sha256:
        raise FailedPrecondition(
            f"所签的不是结算单 {serial} 第 {revision} 版 / the act names another statement "
            f"than {serial} revision {revision} (its identity differs)", "WRONG_STATEMENT")
    return found


def _standing(tx: Tx, serial: int, revision: int) -> tuple[set[str], set[str], set[str]]:
    """Who countersigned, disputed, was overruled on this revision."""
    countersigned, disputed, overruled = set(), set(), set()
    for act in tx.repo.settlements.acts(serial):
        if act.revision != revision:
            continue
        if act.kind == COUNTERSIGN and act.node_id:
            countersigned.add(act.node_id)
        elif act.kind == DISPUTE and act.node_id:
            disputed.add(act.node_id)
        elif act.kind == DECISION:
            msg = pb.SettlementDecision.FromString(wire.from_bytes(act.envelope).body)
            if not msg.revise:
                overruled |= set(msg.overruled_node_ids)
    return countersigned, disputed, overruled


def _update_final(tx: Tx, serial: int) -> bool:
    """Mark the latest revision final if every district on it countersigned it or was
    overruled; returns whether it is final."""
    found = tx.repo.settlements.latest(serial)
    assert found is not None
    if found.final:
        return True
    countersigned, _, overruled = _standing(tx, serial, found.revision)
    lines = [x.node_id for x in _parse(found).sheet.lines]
    if st.is_final(lines, countersigned, overruled):
        tx.repo.settlements.set_final(serial, found.revision)
        return True
    return False


def _district_act(tx: Tx, envelope: Signed, ring: KeyRing, kind: str,
                  message: type[pb.SettlementCountersign] | type[pb.SettlementDispute],
                  ) -> tuple[pb.SettlementCountersign | pb.SettlementDispute,
                             StatementRecord, set[str], set[str]]:
    if isinstance(envelope, Signed) and len(envelope.body) > MAX_ACT_BODY:
        raise InvalidArgument(f"a {kind!r} body is at most {MAX_ACT_BODY} bytes", "OVERSIZED")
    body = directory.verify_node(tx, envelope, kind, ring)
    msg = wire.parse(message, body, kind)
    if msg.node_id != envelope.signer:
        raise PermissionDenied(
            f"区 {envelope.signer} 只能以自己的名义签署 / district {envelope.signer} signs "
            f"only for itself, not for {msg.node_id[:16]!r}", "NOT_YOUR_SIGNATURE")
    found = _latest(tx, msg.serial, msg.revision, bytes(msg.statement_sha256))
    if found.final:
        raise FailedPrecondition(f"结算单 {found.serial} 已定稿 / statement {found.serial} is "
                                 "final already", "ALREADY_FINAL")
    if envelope.signer not in {x.node_id for x in _parse(found).sheet.lines}:
        raise PermissionDenied(f"区 {envelope.signer} 不在结算单 {found.serial} 上 / district "
                               f"{envelope.signer} has no line on statement {found.serial}",
                               "NOT_ON_STATEMENT")
    countersigned, disputed, _ = _standing(tx, found.serial, found.revision)
    if envelope.signer in countersigned:
        raise AlreadyExists(f"区 {envelope.signer} 已会签此版 / district {envelope.signer} "
                            f"countersigned statement {found.serial} revision "
                            f"{found.revision} already", "ALREADY_COUNTERSIGNED")
    return msg, found, countersigned, disputed


def countersign(tx: Tx, envelope: Signed, ring: KeyRing) -> PendingAct:
    """A district's ``settlement.countersign``: its line of the latest revision holds.

    PERMISSION_DENIED: not signed by the district it names (NOT_YOUR_SIGNATURE), a key
    not its admitted one, a district without a line (NOT_ON_STATEMENT). NOT_FOUND
    UNKNOWN_STATEMENT. FAILED_PRECONDITION: STALE_REVISION, WRONG_STATEMENT,
    ALREADY_FINAL. ALREADY_EXISTS ALREADY_COUNTERSIGNED (by another envelope)."""
    msg, found, _, _ = _district_act(tx, envelope, ring, COUNTERSIGN, pb.SettlementCountersign)
    return PendingAct(COUNTERSIGN, found.serial, found.revision, msg.node_id,
                      wire.to_bytes(envelope))


def dispute(tx: Tx, envelope: Signed, ring: KeyRing) -> PendingAct:
    """A district's ``settlement.dispute``: its line does not hold, and the claims that
    differ (at most ``MAX_DISPUTED_CLAIMS``, by claim id, each with a known reason).
    Refused as ``countersign`` is, and INVALID_ARGUMENT BAD_DISPUTE for a malformed
    list, ALREADY_EXISTS ALREADY_DISPUTED for a second dispute of the same revision."""
    msg, found, _, disputed = _district_act(tx, envelope, ring, DISPUTE, pb.SettlementDispute)
    assert isinstance(msg, pb.SettlementDispute)
    ids = [c.claim_id for c in msg.claims]
    if (len(ids) > st.MAX_DISPUTED_CLAIMS or ids != sorted(set(ids))
            or any(c.reason not in st.DISPUTE_REASONS for c in msg.claims)
            or len(msg.detail) > MAX_TEXT or not (ids or msg.detail.strip())):
        raise InvalidArgument(
            f"争议须列出不同的账目（至多 {st.MAX_DISPUTED_CLAIMS} 条，按编号排序）或说明 / a "
            f"dispute names the claims that differ (at most {st.MAX_DISPUTED_CLAIMS}, sorted "
            f"by id, each with a known reason) or says what differs (detail, at most "
            f"{MAX_TEXT} characters)", "BAD_DISPUTE")
    if msg.node_id in disputed:
        raise AlreadyExists(f"区 {msg.node_id} 已对此版提出争议 / district {msg.node_id} "
                            f"disputed statement {found.serial} revision {found.revision} "
                            "already", "ALREADY_DISPUTED")
    return PendingAct(DISPUTE, found.serial, found.revision, msg.node_id,
                      wire.to_bytes(envelope))


# the bureau's acts ---------------------------------------------------------------------------

def _reason_text(text: str) -> None:
    if not text.strip() or len(text) > MAX_TEXT:
        raise InvalidArgument(f"写明理由（至多 {MAX_TEXT} 字）/ say why, in at most {MAX_TEXT} "
                              "characters", "BAD_REASON")


@dataclass(frozen=True, slots=True)
class Decided:
    """A decision logged (its leaf), and the revision it issued, if it revised."""

    log_index: int
    final: bool
    revised: Closed | None = None


def decide(tx: Tx, envelope: Signed, city_public_key: bytes,
           sign: Sign | None = None) -> Decided:
    """The bureau's ``settlement.decision`` on the latest revision of a statement.
    Upheld: the overruled districts (each on the statement, none that countersigned:
    those that disputed it, or a district that cannot answer, a revoked one, say) count
    as final-checked. Revised (only a disputed revision): ``sign`` (the clearinghouse
    key) issues revision + 1 without the excluded claims (each settled by this
    statement); they go back to the open period, and into the running positions.

    PERMISSION_DENIED: not signed by the city root key. NOT_FOUND, FAILED_PRECONDITION
    STALE_REVISION, WRONG_STATEMENT, ALREADY_FINAL as for a countersign;
    FAILED_PRECONDITION NO_DISPUTE (a revision nobody disputed), NO_CLEARINGHOUSE_KEY
    (a revision to sign and no key). INVALID_ARGUMENT BAD_DECISION, BAD_REASON."""
    body = admission.verify_city(tx, envelope, DECISION, city_public_key)
    msg = wire.parse(pb.SettlementDecision, body, DECISION)
    found = _latest(tx, msg.serial, msg.revision, bytes(msg.statement_sha256))
    if found.final:
        raise FailedPrecondition(f"结算单 {found.serial} 已定稿 / statement {found.serial} is "
                                 "final already", "ALREADY_FINAL")
    _reason_text(msg.reason)
    statement = _parse(found)
    lines = {x.node_id for x in statement.sheet.lines}
    countersigned, disputed, _ = _standing(tx, found.serial, found.revision)
    overruled = list(msg.overruled_node_ids)
    excluded = list(msg.excluded_claim_ids)
    if msg.revise:
        if not disputed:
            raise FailedPrecondition(
                f"结算单 {found.serial} 第 {found.revision} 版无争议，无需修订 / nobody disputed "
                f"statement {found.serial} revision {found.revision}: there is nothing to "
                "revise", "NO_DISPUTE")
        if overruled or not excluded or excluded != sorted(set(excluded)) or \
                len(excluded) > MAX_EXCLUDED:
            raise InvalidArgument(
                "修订须列出排除的账目（按编号排序），不驳回任何区 / a revision names the claims "
                f"it leaves out (1 to {MAX_EXCLUDED}, sorted, distinct) and overrules nobody",
                "BAD_DECISION")
        settled = tx.repo.settlements.settled_by(excluded)
        strangers = [c for c in excluded if settled.get(c) != found.serial]
        if strangers:
            raise InvalidArgument(f"账目 {strangers[0]} 不在结算单 {found.serial} 中 / claim "
                                  f"{strangers[0]} is not settled by statement "
                                  f"{found.serial}", "BAD_DECISION")
        if sign is None:
            raise FailedPrecondition("修订须由清算中心密钥签署新版 / a revision is signed with "
                                     "the clearinghouse key, which is not at hand here",
                                     "NO_CLEARINGHOUSE_KEY")
    else:
        if excluded or not overruled or overruled != sorted(set(overruled)) or \
                not set(overruled) <= lines or set(overruled) & countersigned:
            raise InvalidArgument(
                "维持原结算单须列出被驳回的区（在结算单上、未会签），不排除账目 / an upheld "
                "statement names the districts overruled (on it, not countersigned, sorted) "
                "and excludes no claim", "BAD_DECISION")
    index = log.record_settlement(tx, envelope)
    tx.repo.settlements.insert_act(ActRecord(index, found.serial, found.revision, DECISION,
                                             None, wire.to_bytes(envelope), tx.now))
    if not msg.revise:
        return Decided(index, _update_final(tx, found.serial))
    assert sign is not None
    put_back = tx.repo.settlements.refs(excluded)
    if tx.repo.settlements.unsettle(found.serial, excluded) != len(excluded):
        raise InvariantViolation("an excluded claim changed underneath")
    deltas: dict[str, int] = {}
    for ref in put_back.values():
        deltas[ref.creditor] = deltas.get(ref.creditor, 0) + ref.minutes
        deltas[ref.debtor] = deltas.get(ref.debtor, 0) - ref.minutes
    tx.repo.settlements.add_to_positions(deltas)
    check_positions(tx)
    try:
        sheet = st.compute(_claims(tx, found.serial), [x.node_id for x in
                                                       statement.sheet.lines],
                           openings={x.node_id: x.opening_minutes
                                     for x in statement.sheet.lines if x.opening_minutes},
                           rate_fen_per_hour=statement.sheet.rate_fen_per_hour,
                           excluded=sorted({*statement.sheet.excluded, *excluded}),
                           presorted=True)
    except st.SettlementError as e:
        raise InvariantViolation(f"revising statement {found.serial}: {e}") from e
    revised = st.Statement(found.serial, found.revision + 1, statement.period,
                           statement.start, statement.end, statement.head_note, tx.now,
                           statement.previous_sha256, statement.policy_sha256,
                           statement.on_default, sheet)
    closed = _issue(tx, sign, revised, False)
    return Decided(index, False, closed)


def default(tx: Tx, envelope: Signed, city_public_key: bytes) -> int:
    """The bureau's ``settlement.default``: a district did not settle the debit of a
    final statement; returns its leaf. The treatment is the statement's ``on_default``
    (the policy's, set ahead of time); carry makes the unpaid debit the district's
    opening on the next statement, so it may only come before that one closes.

    PERMISSION_DENIED: not signed by the city root key. NOT_FOUND UNKNOWN_STATEMENT.
    FAILED_PRECONDITION: NOT_FINAL, WRONG_STATEMENT, NOT_A_DEBIT (the district's closing
    is no debit), WRONG_TREATMENT, NEXT_PERIOD_CLOSED (carry). ALREADY_EXISTS
    ALREADY_DEFAULTED. INVALID_ARGUMENT BAD_AMOUNT, BAD_REASON."""
    body = admission.verify_city(tx, envelope, DEFAULT, city_public_key)
    msg = wire.parse(pb.SettlementDefault, body, DEFAULT)
    found = tx.repo.settlements.latest(msg.serial) if msg.serial >= 1 else None
    if found is None:
        raise NotFound(f"没有结算单 {msg.serial} / there is no statement {msg.serial}",
                       "UNKNOWN_STATEMENT")
    if not found.final:
        raise FailedPrecondition(f"结算单 {found.serial} 尚未定稿 / statement {found.serial} "
                                 "is not final: a default follows a final statement",
                                 "NOT_FINAL")
    if bytes(msg.statement_sha256) != found.statement_sha256:
        raise FailedPrecondition(f"所指不是结算单 {found.serial} 的定稿 / the act names another "
                                 f"statement than {found.serial}'s final revision",
                                 "WRONG_STATEMENT")
    statement = _parse(found)
    line = statement.sheet.line(msg.node_id) if is_node_id(msg.node_id) else None
    if line is None or line.closing_minutes >= 0:
        raise FailedPrecondition(
            f"区 {msg.node_id[:16]} 在结算单 {found.serial} 上没有净欠 / district "
            f"{msg.node_id[:16]!r} owes nothing net on statement {found.serial}", "NOT_A_DEBIT")
    owed = -line.closing_minutes
    rate = statement.sheet.rate_fen_per_hour
    if not 0 < msg.unpaid_minutes <= owed or msg.unpaid_fen != (
            st.fen_of(msg.unpaid_minutes, rate) if rate else 0):
        raise InvalidArgument(
            f"未付分钟须在 1 到 {owed} 之间，金额按费率折算 / the unpaid minutes are 1 to {owed} "
            "and the unpaid fen are those minutes at the statement's rate", "BAD_AMOUNT")
    if msg.treatment != statement.on_default:
        raise FailedPrecondition(
            f"城市政策规定的处理方式是 {statement.on_default} / the city policy set "
            f"{statement.on_default!r} for a default ahead of time, not "
            f"{msg.treatment[:16]!r}", "WRONG_TREATMENT")
    _reason_text(msg.reason)
    acts = tx.repo.settlements.acts(found.serial)
    if any(a.kind == DEFAULT and a.node_id == msg.node_id for a in acts):
        raise AlreadyExists(f"区 {msg.node_id} 在结算单 {found.serial} 上的违约已记录 / a "
                            f"default of {msg.node_id} on statement {found.serial} is "
                            "recorded already", "ALREADY_DEFAULTED")
    latest = tx.repo.settlements.latest()
    if msg.treatment == OnDefault.CARRY.value and latest is not None and \
            latest.serial != found.serial:
        raise FailedPrecondition(
            f"下一期（{latest.period}）已结算，无法结转 / the next period ({latest.period}) is "
            "closed already: the debit cannot carry into it", "NEXT_PERIOD_CLOSED")
    index = log.record_settlement(tx, envelope, msg.node_id)
    tx.repo.settlements.insert_act(ActRecord(index, found.serial, found.revision, DEFAULT,
                                             msg.node_id, wire.to_bytes(envelope), tx.now))
    return index


# reads ---------------------------------------------------------------------------------------

def _serial(tx: Tx, serial: int, period: str = "") -> int:
    if isinstance(serial, bool) or not 0 <= serial < 2**63:
        raise InvalidArgument("结算单序号无效 / a statement serial is 0 (the latest) or more",
                              "BAD_SERIAL")
    if period:
        found = tx.repo.settlements.serial_of(period[:st.MAX_LABEL_CHARS + 1])
        if found is None or (serial and serial != found):
            raise NotFound(f"期间 {period[:40]} 未结算 / no statement for period "
                           f"{period[:40]!r}", "UNKNOWN_STATEMENT")
        return found
    latest = tx.repo.settlements.latest(serial or None)
    if latest is None:
        raise NotFound("还没有结算单 / no statement yet" if not serial else
                       f"没有结算单 {serial} / there is no statement {serial}",
                       "UNKNOWN_STATEMENT")
    return latest.serial


def get(tx: Tx, serial: int = 0, period: str = "") -> pb.GetSettlementResponse:
    """A statement as it stands: every revision and every act on it, and whether the
    latest revision is final (GetSettlement)."""
    number = _serial(tx, serial, period)
    revisions = tx.repo.settlements.revisions(number)
    out = pb.GetSettlementResponse(statements=[r.envelope for r in revisions],
                        log_indexes=[r.log_index for r in revisions],
                        final=revisions[-1].final)
    fields = {COUNTERSIGN: out.countersigns, DISPUTE: out.disputes, DECISION: out.decisions,
              DEFAULT: out.defaults}
    for act in tx.repo.settlements.acts(number):
        fields[act.kind].append(act.envelope)
    return out


def _ref_pb(ref: ClaimRef) -> pb.SettledClaimRef:
    out = pb.SettledClaimRef(
        claim_id=ref.claim_id, creditor_node_id=ref.creditor, debtor_node_id=ref.debtor,
        minutes=ref.minutes, completed_index=ref.completed_index,
        kind=pb.CLAIM_KIND_MOVE if ref.kind == "move" else pb.CLAIM_KIND_REDEMPTION)
    if ref.completed_at is not None:
        out.completed_at.FromDatetime(ref.completed_at.astimezone(UTC))
    return out


def claims_page(tx: Tx, serial: int, revision: int = 0, node_id: str = "",
                after_claim_id: str = "") -> pb.GetSettlementClaimsResponse:
    """The claims a statement revision settles, by claim id after ``after_claim_id``, at
    most ``MAX_CLAIMS_PAGE`` (``more`` says there are others): those ``node_id`` is a
    party to, or all (GetSettlementClaims). An earlier revision also lists the claims a
    later one left out."""
    number = _serial(tx, serial)
    if node_id and not is_node_id(node_id):
        raise InvalidArgument("区编号是六位数字 / a node id is six digits", "BAD_NODE_ID")
    if after_claim_id and not st.is_claim_id(after_claim_id):
        raise InvalidArgument("after_claim_id 不是账目编号 / after_claim_id is not a claim id",
                              "BAD_PAGE")
    revisions = tx.repo.settlements.revisions(number)
    if isinstance(revision, bool) or not 0 <= revision <= len(revisions):
        raise NotFound(f"结算单 {number} 没有第 {revision} 版 / statement {number} has no "
                       f"revision {revision}", "UNKNOWN_STATEMENT")
    chosen = revisions[(revision or len(revisions)) - 1]
    limit = st.MAX_CLAIMS_PAGE
    rows = tx.repo.settlements.page(number, node_id, after_claim_id, limit + 1)
    if chosen is not revisions[-1]:  # claims a later revision left out belong here too
        left_out = set(_parse(revisions[-1]).sheet.excluded) - set(
            _parse(chosen).sheet.excluded)
        extra = [r for r in tx.repo.settlements.refs(left_out).values()
                 if r.claim_id > after_claim_id and (not node_id or node_id in (
                     r.creditor, r.debtor))]
        rows = sorted([*rows, *extra], key=lambda r: r.claim_id)
    out = pb.GetSettlementClaimsResponse(claims=[_ref_pb(r) for r in rows[:limit]],
                              more=len(rows) > limit)
    return out


__all__ = ["COUNTERSIGN", "DECISION", "DEFAULT", "DISPUTE", "Closed", "Decided",
           "PendingAct", "Rules", "check_positions", "claims_page", "close", "close_due",
           "countersign", "decide", "default", "dispute", "get", "rules_in_force"]
