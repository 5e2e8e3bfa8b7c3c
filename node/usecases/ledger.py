"""Use-cases on hours outside the service loop, reading the ledger, and checking it."""

from __future__ import annotations

from node.domain.access import MAX_ACTOR_CHARS
from node.domain.identity import MIN_SECRET_BYTES
from node.domain.ledger import (
    CITY_GRANT,
    DONATION_POOL,
    MAX_MEMO_CHARS,
    Account,
    AccountKind,
    Entry,
    EntryKind,
    Origin,
    Posting,
    StoredEntry,
    chain_hash,
    check_entry,
    genesis_hash,
    reversal_of,
)
from node.domain.orders import OrderState, PersonKind, check_text, held_problem
from node.storage.repo import Repo
from node.usecases.app import NodeIdentity, Tx, city_time
from node.usecases.people import district_actor
from node.usecases.views import Actor, BalanceView, HistoryView, LedgerReport, OriginBalance
from runtime.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    InvariantViolation,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
)
from timebank.minutes import MAX_MINUTES, format_hours

#: The refused deliveries a ledger check lists (it counts them all).
MAX_REFUSALS_SHOWN = 20


def initialise(repo: Repo, node: NodeIdentity, policy_digest: str) -> None:
    """Write the node's identity and the chain's genesis head (once, at init)."""
    if len(node.city_secret) < MIN_SECRET_BYTES:
        raise ValueError("the city secret is too short")
    existing = repo.meta.get("node_id")
    if existing is not None:
        if existing != node.node_id:
            raise FailedPrecondition(f"this database belongs to node {existing}, not "
                                     f"{node.node_id}", "WRONG_NODE")
        return
    repo.meta.set("node_id", node.node_id)
    repo.meta.set("district", node.district)
    repo.meta.set("policy_digest", policy_digest)
    repo.ledger.init_head(genesis_hash(node.node_id))


#: What a memo or reason may hold, leaving room for the actor the entry names with it.
_ROOM = MAX_MEMO_CHARS - MAX_ACTOR_CHARS - 3


def _check_amount(minutes: int, what: str) -> None:
    if not 0 < minutes <= MAX_MINUTES:
        raise InvalidArgument(f"{what} must be 1..{MAX_MINUTES} minutes, not {minutes}",
                              "MINUTES_OUT_OF_RANGE")


def donate(tx: Tx, person_id: int, minutes: int, *, actor: Actor | None = None) -> StoredEntry:
    """A person or group gives stored minutes to the donation pool (``actor``: who
    gave them, when not the person themself, e.g. "staff:3 for person:5")."""
    _check_amount(minutes, "a donation")
    person = tx.repo.people.get(person_id)
    origin = Origin.GROUP if person.kind == PersonKind.GROUP else Origin.INDIVIDUAL
    account = Account.of_person(person.person_ref, origin)
    record = tx.repo.ledger.ensure_account(account, person.id)
    if record.available < minutes:
        raise FailedPrecondition(f"person {person.id} has {format_hours(record.available)} "
                                 f"of their own earned hours available; cannot donate "
                                 f"{format_hours(minutes)}", "INSUFFICIENT_BALANCE")
    entry = Entry(EntryKind.DONATION, (Posting(account, -minutes), Posting(DONATION_POOL, minutes)),
                  tx.now, memo=f"donation by {(actor or Actor(person_id=person.id)).label}")
    return tx.repo.ledger.append(entry, {person.person_ref: person.id})


def grant(tx: Tx, person_id: int, minutes: int, staff_id: int, memo: str, *,
          actor: Actor | None = None) -> StoredEntry:
    """The city fund grants hours to a priority elder who could not store their own.
    ``actor``: the authenticated caller (else staff ``staff_id``); named in the memo."""
    _check_amount(minutes, "a grant")
    memo = check_text("memo", memo, _ROOM)
    who = district_actor(tx, actor, staff_id)
    person = tx.repo.people.get(person_id)
    if not person.priority:
        raise PermissionDenied("city grants go to priority elders only", "NOT_A_PRIORITY_ELDER")
    fund = tx.repo.ledger.ensure_account(CITY_GRANT)
    budget = tx.policy.grant_budget_minutes
    if budget + fund.available < minutes:
        raise ResourceExhausted(f"the city fund has {format_hours(max(0, budget + fund.available))}"
                                " left on this node", "GRANT_BUDGET_EXHAUSTED")
    total = sum(a.balance for a in tx.repo.ledger.accounts_of(person.id))
    if total + minutes > tx.policy.cap_minutes:
        raise FailedPrecondition(f"the grant would take person {person.id} over the stored-hours "
                                 f"cap of {format_hours(tx.policy.cap_minutes)}", "CAP_EXCEEDED")
    account = Account.of_person(person.person_ref, Origin.GRANTED)
    entry = Entry(EntryKind.GRANT, (Posting(CITY_GRANT, -minutes), Posting(account, minutes)),
                  tx.now, memo=f"{memo} ({who.label})" if memo else f"grant by {who.label}")
    return tx.repo.ledger.append(entry, {person.person_ref: person.id})


def reverse(tx: Tx, seq: int, staff_id: int, reason: str, *,
            actor: Actor | None = None) -> StoredEntry:
    """Correct a mistake by appending the entry that undoes it. History is never edited.
    ``actor``: the authenticated caller (else staff ``staff_id``); named in the memo."""
    reason = check_text("reason", reason, _ROOM)
    if not reason:
        raise InvalidArgument("a correction needs a reason")
    who = district_actor(tx, actor, staff_id)
    original = tx.repo.ledger.entry(seq)
    if original is None:
        raise NotFound(f"there is no ledger entry {seq}", "UNKNOWN_ENTRY")
    if original.entry.kind is EntryKind.REVERSAL:
        raise FailedPrecondition(f"entry {seq} is itself a correction; post a new entry instead",
                                 "REVERSAL_OF_REVERSAL")
    if original.entry.kind is EntryKind.CLAIM:
        raise FailedPrecondition(
            f"entry {seq} is this district's side of a claim the clearinghouse completed; "
            "the other district posted its side too, so it cannot be undone here alone",
            "CLAIM_ENTRY")
    if original.entry.kind is EntryKind.SETTLEMENT:
        raise FailedPrecondition(
            f"第 {seq} 笔是各区共同确认的结算入账，不能由本区单独冲正 / entry {seq} posts a "
            "settlement statement every district agreed to; it cannot be undone here alone",
            "SETTLEMENT_ENTRY")
    done = tx.repo.ledger.reversal_of_seq(seq)
    if done is not None:
        raise AlreadyExists(f"entry {seq} was already reversed by entry {done}", "ALREADY_REVERSED")
    entry = reversal_of(original.entry, seq, tx.now, f"{who.label.replace(':', ' ')}: {reason}")
    person_ids: dict[str, int] = {}
    gains: dict[int, int] = {}
    for p in entry.postings:
        record = tx.repo.ledger.account(p.account.code)
        assert record is not None
        if p.account.kind is AccountKind.PERSON:
            person_ids[p.account.person_ref or ""] = record.person_id or 0
            gains[record.person_id or 0] = gains.get(record.person_id or 0, 0) + p.minutes
        if p.account.never_negative and record.available + p.minutes < 0:
            raise FailedPrecondition(
                f"entry {seq} cannot be reversed: {p.account.code} has only "
                f"{format_hours(record.available)} available (already spent or held)",
                "INSUFFICIENT_BALANCE")
    # giving minutes back (an undone payment or donation) must not break the stored-hours cap
    totals = tx.repo.ledger.person_totals([pid for pid, gain in gains.items() if gain > 0])
    for pid, total in totals.items():
        if total + gains[pid] > tx.policy.cap_minutes:
            raise FailedPrecondition(
                f"entry {seq} cannot be reversed: it would give person {pid} "
                f"{format_hours(total + gains[pid])}, over the stored-hours cap of "
                f"{format_hours(tx.policy.cap_minutes)}", "CAP_EXCEEDED")
    return tx.repo.ledger.append(entry, person_ids)


def balance(tx: Tx, person_id: int) -> BalanceView:
    ref, rows = tx.repo.ledger.balances_of(person_id)
    by_origin = tuple(OriginBalance(Origin(origin), total, held) for origin, total, held in rows)
    return BalanceView(person_id, ref, sum(b.total for b in by_origin),
                       sum(b.held for b in by_origin), by_origin, tx.policy.cap_minutes)


def history(tx: Tx, person_id: int, after_seq: int, limit: int, *,
            newest_first: bool = False, before_seq: int = 0) -> HistoryView:
    """A person's ledger entries with what each changed for them: oldest first, the
    ``limit`` after ``after_seq``; or ``newest_first``, the latest ``limit`` before
    ``before_seq`` (0: up to the newest), read from the end however long the history."""
    if not 1 <= limit <= 1000:
        raise InvalidArgument("read at most 1000 history entries at a time")
    if newest_first and after_seq:
        raise InvalidArgument("从最新一笔往前翻页时不能指定 after_seq (newest first pages back "
                              "with before_seq; after_seq must be 0)",
                              "AFTER_SEQ_WITH_NEWEST_FIRST")
    if before_seq and not newest_first:
        raise InvalidArgument("before_seq 只用于从最新一笔往前翻页 (before_seq pages back "
                              "newest first: set newest_first, or page on with after_seq)",
                              "BEFORE_SEQ_NEEDS_NEWEST_FIRST")
    person = tx.repo.people.get(person_id)
    accounts = tx.repo.ledger.accounts_of(person.id)
    codes = {a.code for a in accounts}
    account_ids = [a.id for a in accounts]
    if newest_first:
        entries = tx.repo.ledger.latest_entries_touching(account_ids, before_seq, limit)
    else:
        entries = tx.repo.ledger.entries_touching(account_ids, after_seq, limit)
    return HistoryView(person.id, tuple(
        (e, sum(p.minutes for p in e.entry.postings if p.account.code in codes))
        for e in entries))


def check_ledger(tx: Tx) -> LedgerReport:
    """Verify every invariant of the stored ledger; report problems instead of raising."""
    repo = tx.repo
    problems: list[str] = []
    prev = genesis_hash(tx.node.node_id)
    sums: dict[str, int] = {}
    count = 0
    entries = repo.ledger.iter_entries()
    while True:
        try:
            stored = next(entries, None)
        except InvariantViolation as e:  # a stored entry that is not even a valid entry
            problems.append(f"entry {count + 1}: {e}; the audit cannot read past it")
            break
        if stored is None:
            break
        count += 1
        if stored.seq != count:
            problems.append(f"entry {stored.seq}: expected sequence number {count}")
        try:
            check_entry(stored.entry)
        except AssertionError as e:
            problems.append(f"entry {stored.seq}: {e}")
        if stored.prev_hash != prev:
            problems.append(f"entry {stored.seq}: does not follow entry {stored.seq - 1}")
        if chain_hash(prev, stored.seq, stored.entry) != stored.hash:
            problems.append(f"entry {stored.seq}: contents do not match its hash")
        prev = stored.hash
        for p in stored.entry.postings:
            sums[p.account.code] = sums.get(p.account.code, 0) + p.minutes
        if len(problems) > 50:
            problems.append("… stopping after 50 problems")
            break
    head_seq, head_hash = repo.ledger.head()
    if (head_seq, head_hash) != (count, prev):
        problems.append(f"the ledger head says entry {head_seq}; the chain ends at {count}")
    accounts = repo.ledger.all_accounts()
    holds = repo.holds.active_sums()
    totals = {kind: 0 for kind in AccountKind}
    per_person: dict[int, int] = {}
    for a in accounts:
        account = Account(AccountKind(a.kind), Origin(a.origin) if a.origin else None,
                          a.code.split("/")[1] if a.kind == AccountKind.PERSON else None)
        if sums.get(a.code, 0) != a.balance:
            problems.append(f"account {a.code}: balance {a.balance} but postings sum to "
                            f"{sums.get(a.code, 0)}")
        if holds.get(a.id, 0) != a.held:
            problems.append(f"account {a.code}: held {a.held} but active holds sum to "
                            f"{holds.get(a.id, 0)}")
        if account.never_negative and (a.balance < 0 or a.balance < a.held):
            problems.append(f"account {a.code}: negative (balance {a.balance}, held {a.held})")
        if a.person_id is not None:
            per_person[a.person_id] = per_person.get(a.person_id, 0) + a.balance
        totals[AccountKind(a.kind)] += a.balance
    for person_id, total in per_person.items():  # the cap counts all origins together
        if total > tx.policy.cap_minutes:
            problems.append(f"person {person_id}: {total} minutes stored, over the cap of "
                            f"{tx.policy.cap_minutes}")
    if sum(totals.values()) != 0:
        problems.append(f"balances do not sum to zero: {sum(totals.values())}")
    if repo.holds.of_final_orders():
        problems.append("some finished orders still hold minutes")
    for order_id, state, shown, by_claim, active in repo.holds.shown_by_orders():
        problem = held_problem(OrderState(state), shown, None if by_claim else active)
        if problem is not None:
            problems.append(f"order {order_id} {problem}")
        if by_claim and active:
            problems.append(f"order {order_id} is paid by another district but holds "
                            f"{active} min here")
    if repo.holds.of_final_claims():
        problems.append("some finished claims still hold minutes")
    fund = repo.ledger.account(CITY_GRANT.code)
    if fund is not None and fund.available < -tx.policy.grant_budget_minutes:
        problems.append("the city fund is drawn beyond its budget")
    refusals = tuple(
        f"delivery {r.seq} ({r.kind} by {r.signer or '?'} key {r.key_id or '?'}"
        + (f", claim {r.claim_id}" if r.claim_id else "")
        + f") at {city_time(r.refused_at)}: {r.reason}: {r.detail}"
        for r in repo.inbox.refused(MAX_REFUSALS_SHOWN))
    return LedgerReport(
        ok=not problems, transactions=count, accounts=len(accounts), head_hash=prev,
        problems=tuple(problems), issued=-totals[AccountKind.ISSUANCE],
        granted=-totals[AccountKind.CITY_GRANT], held_by_people=totals[AccountKind.PERSON],
        donation_pool=totals[AccountKind.DONATION_POOL],
        consumed=totals[AccountKind.CONSUMPTION], clearing=totals[AccountKind.CLEARING],
        refused_deliveries=repo.inbox.refused_count(), refusals=refusals)
