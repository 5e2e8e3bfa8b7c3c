"""Settlement periods (ADR 0019): what a closed period owes, netted, in minutes and fen.

The clearinghouse closes a period at a log size ``end``: every claim completed by a log
leaf below ``end`` and not settled by an earlier statement is settled now; claims still
open roll into the next period. From those claims come the gross bilateral flows (whose
people spent how many minutes in which district), each district's net position, the
netted transfers (at most N - 1 for N districts instead of one per pair), and, at the
city policy's rate, integer fen per district with the rounding residue stated.

The clearinghouse signs the result as a ``settlement`` envelope into its log; every
district recomputes its own line from its own ledger (``check_line``) and countersigns
or disputes; the bureau resolves a dispute only by a city-signed decision. Anyone
holding the log recomputes every statement from the log alone (``from_log``).

This module is the contract's one copy of these rules: the clearinghouse, the nodes,
the auditor and the tests all call it. Pure functions over immutable values; no I/O.
Amounts are integers; every invariant is asserted here, not left to the callers.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from timebank.citytime import CITY_TZ
from timebank.ids import is_node_id
from timebank.minutes import MAX_MINUTES, MINUTES_PER_HOUR
from timebank.policy import MAX_RATE_FEN_PER_HOUR, OnDefault
from timebank.v1 import clearing_pb2 as pb

__all__ = [
    "COUNTERSIGN_KIND",
    "DECISION_KIND",
    "DEFAULT_KIND",
    "DISPUTE_KIND",
    "MAX_CLAIMS_PAGE",
    "MAX_DISPUTED_CLAIMS",
    "MAX_DISTRICTS",
    "RESERVE",
    "RESERVE_NAME",
    "STATEMENT_KIND",
    "Difference",
    "Line",
    "LogReplay",
    "Mismatch",
    "Netting",
    "Period",
    "SettledClaim",
    "SettlementError",
    "Sheet",
    "Statement",
    "Transfer",
    "check_line",
    "claims_digest",
    "compute",
    "format_yuan",
    "is_claim_id",
    "is_month",
    "money",
    "month_period",
    "net_transfers",
    "parse_statement",
    "statement_body",
]

#: Envelope kinds (and log leaf kinds) of settlement.
STATEMENT_KIND = "settlement"  # signed by the clearinghouse
COUNTERSIGN_KIND = "settlement.countersign"  # signed by a district
DISPUTE_KIND = "settlement.dispute"  # signed by a district
DECISION_KIND = "settlement.decision"  # signed by the city root key
DEFAULT_KIND = "settlement.default"  # signed by the city root key

#: The party that stands for the city reserve in transfers and payments, and its name.
RESERVE = "reserve"
RESERVE_NAME = "市储备金 city reserve"
#: The most districts one statement covers: its matrix (N·(N−1) flows) must fit one
#: signed envelope of 64 KiB. Nanjing has 12 districts; the largest Chinese city 38.
MAX_DISTRICTS = 40
#: The most claims a dispute names; a district that differs on more disputes the totals.
MAX_DISPUTED_CLAIMS = 256
#: The most claims one GetSettlementClaims page carries.
MAX_CLAIMS_PAGE = 5000
#: The longest period label.
MAX_LABEL_CHARS = 32
_LABEL = re.compile(r"[0-9A-Za-z][0-9A-Za-z._-]*")
_MONTH = re.compile(r"(\d{4})-(\d{2})")
_CLAIM_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_DIGEST_DOMAIN = b"timebank.v1/settlement-claims\x00"


class SettlementError(ValueError):
    """A settlement value does not hold together; ``reason`` is a stable code."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message


# periods -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Period:
    """A period's label and, for a calendar month, the instants it runs between (UTC;
    the month is drawn in city time). A period closed at a log size has no times."""

    label: str
    starts: datetime | None = None
    ends: datetime | None = None

    def __post_init__(self) -> None:
        if not (isinstance(self.label, str) and 0 < len(self.label) <= MAX_LABEL_CHARS
                and _LABEL.fullmatch(self.label)):
            raise SettlementError("BAD_PERIOD", f"a period is named by 1 to {MAX_LABEL_CHARS} "
                                  "letters, digits, '.', '_' or '-', such as 2026-11")
        if (self.starts is None) != (self.ends is None):
            raise SettlementError("BAD_PERIOD", "a period has both its times or neither")
        if self.starts is not None and self.ends is not None and self.ends <= self.starts:
            raise SettlementError("BAD_PERIOD", "a period ends after it starts")


def month_period(label: str) -> Period:
    """The calendar month ``YYYY-MM`` in city time (Asia/Shanghai)."""
    found = _MONTH.fullmatch(label) if isinstance(label, str) else None
    if found is None or not 2000 <= int(found[1]) <= 8999 or not 1 <= int(found[2]) <= 12:
        raise SettlementError("BAD_PERIOD", f"期间写作 年-月，如 2026-11 / a month is written "
                              f"YYYY-MM, such as 2026-11, not {str(label)[:40]!r}")
    year, month = int(found[1]), int(found[2])
    first = datetime(year, month, 1, tzinfo=CITY_TZ)
    after = datetime(year + month // 12, month % 12 + 1, 1, tzinfo=CITY_TZ)
    return Period(label, first.astimezone(UTC), after.astimezone(UTC))


def is_month(label: str) -> bool:
    """Whether a period label names a calendar month (``YYYY-MM``)."""
    return isinstance(label, str) and _MONTH.fullmatch(label) is not None


def is_claim_id(text: str) -> bool:
    """Whether ``text`` is a claim id (a lowercase UUID)."""
    return isinstance(text, str) and _CLAIM_ID.fullmatch(text) is not None


def previous_month(at: datetime) -> Period:
    """The calendar month before the one ``at`` falls in (city time)."""
    local = at.astimezone(CITY_TZ)
    last = local.replace(day=1) - timedelta(days=1)
    return month_period(f"{last.year:04d}-{last.month:02d}")


# claims --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, order=True)
class SettledClaim:
    """A completed claim as settlement reads it: the debtor's people spent ``minutes``
    with the creditor (a redemption), or the debtor handed them to the creditor (a move).
    ``completed_index``: the log leaf that completed it."""

    claim_id: str
    creditor: str
    debtor: str
    minutes: int
    kind: str = "redemption"
    completed_index: int = 0

    def __post_init__(self) -> None:
        if not (isinstance(self.claim_id, str) and _CLAIM_ID.fullmatch(self.claim_id)):
            raise SettlementError("BAD_CLAIM", f"not a claim id: {str(self.claim_id)[:40]!r}")
        if not (is_node_id(self.creditor) and is_node_id(self.debtor)) or \
                self.creditor == self.debtor:
            raise SettlementError("BAD_CLAIM", f"claim {self.claim_id}: two districts")
        if isinstance(self.minutes, bool) or not 0 < self.minutes <= MAX_MINUTES:
            raise SettlementError("BAD_CLAIM", f"claim {self.claim_id}: minutes out of range")
        if self.kind not in ("redemption", "move"):
            raise SettlementError("BAD_CLAIM", f"claim {self.claim_id}: no kind {self.kind!r}")
        if not 0 <= self.completed_index < 2**63:
            raise SettlementError("BAD_CLAIM", f"claim {self.claim_id}: bad log index")


def _digest_of(node_id: str) -> hashlib._Hash:
    """A claims digest of ``node_id`` begun: the domain and the node id."""
    return hashlib.sha256(_DIGEST_DOMAIN + node_id.encode("ascii") + b"\x00")


def _digest_line(c: SettledClaim) -> bytes:
    return f"{c.claim_id} {c.creditor} {c.debtor} {c.minutes} {c.kind}\n".encode()


def claims_digest(node_id: str, claims: Iterable[SettledClaim]) -> bytes:
    """SHA-256 over the claims ``node_id`` is a party to, sorted by claim id: the domain,
    the node id, then per claim ``id creditor debtor minutes kind\\n`` in ASCII. A
    district recomputes it from its own ledger; a claim's completing leaf is left out
    (the ledger need not know it)."""
    h = _digest_of(node_id)
    mine = sorted((c for c in claims if node_id in (c.creditor, c.debtor)),
                  key=lambda c: c.claim_id)
    last = ""
    for c in mine:
        if c.claim_id == last:
            raise SettlementError("DUPLICATE_CLAIM", f"claim {c.claim_id} is counted twice")
        last = c.claim_id
        h.update(_digest_line(c))
    return h.digest()


# netting and money -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Transfer:
    """``payer`` pays ``payee`` ``amount`` (minutes or fen; always > 0)."""

    payer: str
    payee: str
    amount: int

    def __post_init__(self) -> None:
        if self.amount <= 0 or self.payer == self.payee:
            raise SettlementError("BAD_TRANSFER", "a transfer moves a positive amount "
                                  "between two parties")


def net_transfers(positions: Mapping[str, int]) -> tuple[Transfer, ...]:
    """The netted transfers that settle ``positions`` (+ receives, − pays; they must sum
    to zero): the largest payer pays the largest payee as much as it can, repeatedly.
    Each step settles at least one party, so N parties need at most N − 1 transfers; ties
    break by party name, so the result is one and the same for every reader.

    Asserted: after the transfers every party stands at zero, so netting never changes
    any party's net."""
    if sum(positions.values()) != 0:
        raise SettlementError("NOT_BALANCED", f"positions sum to {sum(positions.values())}, "
                              "not zero")
    payers = [k for k, v in sorted(positions.items(), key=lambda t: (t[1], t[0])) if v < 0]
    payees = [k for k, v in sorted(positions.items(), key=lambda t: (-t[1], t[0])) if v > 0]
    left = {k: abs(v) for k, v in positions.items()}
    out: list[Transfer] = []
    i = j = 0
    while i < len(payers) and j < len(payees):
        payer, payee = payers[i], payees[j]
        amount = min(left[payer], left[payee])
        out.append(Transfer(payer, payee, amount))
        left[payer] -= amount
        left[payee] -= amount
        i += left[payer] == 0
        j += left[payee] == 0
    assert i == len(payers) and j == len(payees), "netting left a party unsettled"
    moved: Counter[str] = Counter()
    for t in out:
        moved[t.payer] -= t.amount
        moved[t.payee] += t.amount
    assert all(moved[k] == v for k, v in positions.items()), "netting changed a net"
    parties = sum(1 for v in positions.values() if v)
    assert len(out) <= max(parties - 1, 0), "netting took more than N - 1 transfers"
    return tuple(out)


def fewest_transfers(positions: Mapping[str, int],
                     flows: Iterable[Flow] = ()) -> tuple[Transfer, ...]:
    """The transfers a statement names: the multilateral netting (``net_transfers``) or,
    where the flows netted pair by pair settle the positions in fewer (the greedy rule
    is not always the fewest when the city splits into groups that trade only among
    themselves), those. Either way at most N − 1, and never more than the pairs."""
    greedy = net_transfers(positions)
    pairs: Counter[tuple[str, str]] = Counter()
    for f in flows:
        pairs[(f.debtor, f.creditor)] += f.minutes
        pairs[(f.creditor, f.debtor)] -= f.minutes
    bilateral = tuple(Transfer(payer, payee, m) for (payer, payee), m in sorted(pairs.items())
                      if m > 0)
    if len(bilateral) >= len(greedy):
        return greedy
    moved: Counter[str] = Counter()
    for t in bilateral:
        moved[t.payer] -= t.amount
        moved[t.payee] += t.amount
    settles = all(moved[k] == v for k, v in positions.items()) and \
        set(k for k, v in moved.items() if v) <= set(positions)
    return bilateral if settles else greedy


def fen_of(minutes: int, rate_fen_per_hour: int) -> int:
    """``minutes`` at the rate, in whole fen, rounded half away from zero."""
    if not 0 <= rate_fen_per_hour <= MAX_RATE_FEN_PER_HOUR:
        raise SettlementError("BAD_RATE", f"a rate is 0 to {MAX_RATE_FEN_PER_HOUR} fen an hour")
    exact = abs(minutes) * rate_fen_per_hour
    rounded = (2 * exact + MINUTES_PER_HOUR) // (2 * MINUTES_PER_HOUR)
    return rounded if minutes >= 0 else -rounded


def format_yuan(fen: int) -> str:
    """Integer fen as yuan with two decimals, ``-12.05``; no floating point."""
    sign = "-" if fen < 0 else ""
    yuan, rest = divmod(abs(fen), 100)
    return f"{sign}{yuan}.{rest:02d}"


def money(positions: Mapping[str, int], rate_fen_per_hour: int) -> tuple[dict[str, int], int]:
    """Each party's money for its position (minutes) at the rate, in fen, and the
    rounding residue the reserve pays (+) or keeps (−): ``sum(fen.values()) + residue
    == 0``."""
    fen = {k: fen_of(v, rate_fen_per_hour) for k, v in positions.items()}
    residue = -sum(fen.values())
    # Each party's rounding moves at most half a fen, so the residue is at most N/2 fen.
    assert 2 * abs(residue) <= len(fen), "a rounding residue larger than rounding makes"
    return fen, residue


# the sheet: what a statement says ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Line:
    """One district's line (proto ``SettlementLine``)."""

    node_id: str
    opening_minutes: int
    net_minutes: int
    owed_minutes: int
    owing_minutes: int
    claims: int
    claims_sha256: bytes
    fen: int

    @property
    def closing_minutes(self) -> int:
        """What the district settles: what it carried in and this period's net."""
        return self.opening_minutes + self.net_minutes


@dataclass(frozen=True, slots=True)
class Flow:
    """A gross bilateral total: the debtor's people spent ``minutes`` with the creditor."""

    creditor: str
    debtor: str
    minutes: int
    claims: int


@dataclass(frozen=True, slots=True)
class Netting:
    """How much netting saves: ``gross`` obligations (nonzero ordered pairs), ``bilateral``
    (nonzero pairs after each pair nets against itself), ``transfers`` (after multilateral
    netting), and the most a city of N districts could have, N·(N−1)."""

    gross: int
    bilateral: int
    transfers: int
    districts: int

    @property
    def possible(self) -> int:
        return self.districts * (self.districts - 1)

    @property
    def removed(self) -> int:
        return self.gross - self.transfers

    def words(self) -> str:
        """How much netting saved, in plain words, Chinese first: the one wording the
        command line, the reports and the demo print."""
        return (f"{self.districts} 个区之间的 {self.gross} 笔双边债务（两两相抵后 "
                f"{self.bilateral} 笔）经多边轧差为 {self.transfers} 笔转账；{self.districts} "
                f"个区最多可有 {self.possible} 笔。 / {self.gross} bilateral obligations among "
                f"{self.districts} districts ({self.bilateral} after each pair nets off) are "
                f"netted multilaterally into {self.transfers} transfers; {self.districts} "
                f"districts could have at most {self.possible}.")


@dataclass(frozen=True, slots=True)
class Sheet:
    """What a statement computes for its claims: lines (by node id), flows (by creditor,
    debtor), netted transfers in minutes, payments in fen with the reserve taking the
    residue, and what the reserve carries for districts' carried-in debits."""

    lines: tuple[Line, ...]
    flows: tuple[Flow, ...]
    transfers: tuple[Transfer, ...]
    payments: tuple[Transfer, ...]
    residue_fen: int
    reserve_opening_minutes: int
    claims: int
    rate_fen_per_hour: int
    excluded: tuple[str, ...] = field(default=())

    def line(self, node_id: str) -> Line | None:
        return next((x for x in self.lines if x.node_id == node_id), None)

    @property
    def netting(self) -> Netting:
        pairs = {(f.creditor, f.debtor): f.minutes for f in self.flows}
        bilateral = {tuple(sorted(p)) for p, m in pairs.items()
                     if m != pairs.get((p[1], p[0]), 0)}
        return Netting(len(pairs), len(bilateral), len(self.transfers), len(self.lines))


def compute(claims: Iterable[SettledClaim], districts: Iterable[str], *,
            openings: Mapping[str, int] | None = None, rate_fen_per_hour: int = 0,
            excluded: Iterable[str] = (), presorted: bool = False) -> Sheet:
    """The sheet for ``claims`` (each settled once) among ``districts`` (every admitted
    district gets a line, even an idle one). ``openings``: what each district carries in
    (+ owed to it); the reserve carries the other side. ``excluded``: claim ids a bureau
    decision left out (they must not be among ``claims``).

    ``presorted``: the claims come in strictly increasing claim id (SettlementError
    UNSORTED otherwise), as a clearinghouse streams a million of them from its database:
    each line's digest is then made as they pass, and no claim is kept (memory
    independent of their number). The sheet is the same either way.

    Asserted: net positions sum to zero; each net is what it is owed less what it owes;
    netting leaves every net as it was; money plus residue sums to zero."""
    nodes = sorted(set(districts))
    if len(nodes) > MAX_DISTRICTS:
        raise SettlementError("TOO_MANY_DISTRICTS", f"a statement covers at most "
                              f"{MAX_DISTRICTS} districts, not {len(nodes)}")
    known = set(nodes)
    opened = dict(openings or {})
    if set(opened) - known:
        raise SettlementError("UNKNOWN_DISTRICT", "an opening names no admitted district")
    gross: Counter[tuple[str, str]] = Counter()
    count: Counter[tuple[str, str]] = Counter()
    mine: dict[str, list[SettledClaim]] = {n: [] for n in nodes}
    running = {n: _digest_of(n) for n in nodes}  # presorted: each line's digest so far
    parts: Counter[str] = Counter()  # presorted: each district's claims
    leave_out = frozenset(excluded)
    total = 0
    seen: set[str] = set()
    last = ""
    for c in claims:
        if c.creditor not in known or c.debtor not in known:
            raise SettlementError("UNKNOWN_DISTRICT", f"claim {c.claim_id} names a district "
                                  "not admitted")
        if presorted:
            if c.claim_id <= last:
                raise SettlementError(
                    "DUPLICATE_CLAIM" if c.claim_id == last else "UNSORTED",
                    f"claim {c.claim_id} comes after {last}: presorted claims come in "
                    "strictly increasing id")
            last = c.claim_id
        elif c.claim_id in seen:
            raise SettlementError("DUPLICATE_CLAIM", f"claim {c.claim_id} is counted twice")
        if c.claim_id in leave_out:
            raise SettlementError("EXCLUDED_CLAIM", f"claim {c.claim_id} was excluded")
        gross[(c.creditor, c.debtor)] += c.minutes
        count[(c.creditor, c.debtor)] += 1
        if presorted:
            line = _digest_line(c)
            running[c.creditor].update(line)
            running[c.debtor].update(line)
            parts[c.creditor] += 1
            parts[c.debtor] += 1
        else:
            seen.add(c.claim_id)
            mine[c.creditor].append(c)
            mine[c.debtor].append(c)
        total += 1
    owed = Counter[str]()
    owing = Counter[str]()
    for (creditor, debtor), m in gross.items():
        owed[creditor] += m
        owing[debtor] += m
    net = {n: owed[n] - owing[n] for n in nodes}
    if sum(net.values()) != 0:
        raise AssertionError(f"net positions sum to {sum(net.values())}, not zero")
    closing = {n: opened.get(n, 0) + net[n] for n in nodes}
    reserve_opening = -sum(opened.values())
    fen, residue = money({**closing, RESERVE: reserve_opening}, rate_fen_per_hour)
    lines = tuple(Line(n, opened.get(n, 0), net[n], owed[n], owing[n],
                       parts[n] if presorted else len(mine[n]),
                       running[n].digest() if presorted else claims_digest(n, mine[n]),
                       fen[n] if rate_fen_per_hour else 0)
                  for n in nodes)
    flows = tuple(Flow(c, d, gross[(c, d)], count[(c, d)]) for c, d in sorted(gross))
    transfers = fewest_transfers({**closing, RESERVE: reserve_opening}, flows)
    if rate_fen_per_hour:
        payments = net_transfers({**{k: v for k, v in fen.items() if k != RESERVE},
                                  RESERVE: fen[RESERVE] + residue})
    else:
        payments, residue = (), 0
    sheet = Sheet(lines, flows, transfers, payments, residue, reserve_opening, total,
                  rate_fen_per_hour, tuple(sorted(leave_out)))
    check_sheet(sheet)
    return sheet


def check_sheet(sheet: Sheet) -> None:
    """Every invariant a statement's figures keep; SettlementError naming the first one
    broken. A reader runs it on every statement it receives."""
    def fail(message: str) -> None:
        raise SettlementError("INCONSISTENT", message)

    nodes = [x.node_id for x in sheet.lines]
    if nodes != sorted(set(nodes)) or len(nodes) > MAX_DISTRICTS:
        fail("the lines are not one per district, by node id")
    if sum(x.net_minutes for x in sheet.lines) != 0:
        fail("the districts' nets do not sum to zero")
    if sum(x.opening_minutes for x in sheet.lines) + sheet.reserve_opening_minutes != 0:
        fail("the openings and the reserve's do not sum to zero")
    owed = Counter[str]()
    owing = Counter[str]()
    for f in sheet.flows:
        if f.creditor == f.debtor or f.minutes <= 0 or f.claims <= 0:
            fail("a flow is not between two districts")
        owed[f.creditor] += f.minutes
        owing[f.debtor] += f.minutes
    if [(f.creditor, f.debtor) for f in sheet.flows] != \
            sorted({(f.creditor, f.debtor) for f in sheet.flows}):
        fail("the flows are not one per pair, by creditor and debtor")
    for x in sheet.lines:
        if x.owed_minutes != owed[x.node_id] or x.owing_minutes != owing[x.node_id]:
            fail(f"district {x.node_id}'s gross totals are not its flows'")
        if x.net_minutes != x.owed_minutes - x.owing_minutes:
            fail(f"district {x.node_id}'s net is not what it is owed less what it owes")
    if not (set(owed) | set(owing)) <= set(nodes):
        fail("a flow names a district without a line")
    if 2 * sheet.claims != sum(x.claims for x in sheet.lines) or \
            sheet.claims != sum(f.claims for f in sheet.flows):
        fail("the claim counts do not add up")
    closing = {x.node_id: x.closing_minutes for x in sheet.lines}
    closing[RESERVE] = sheet.reserve_opening_minutes
    if list(sheet.transfers) != list(fewest_transfers(closing, sheet.flows)):
        fail("the transfers are not the netting of the closing positions")
    if sheet.rate_fen_per_hour:
        fen, residue = money(closing, sheet.rate_fen_per_hour)
        if any(x.fen != fen[x.node_id] for x in sheet.lines) or residue != sheet.residue_fen:
            fail("the money is not the positions at the rate")
        paying = {k: v for k, v in fen.items() if k != RESERVE}
        paying[RESERVE] = fen[RESERVE] + residue
        if list(sheet.payments) != list(net_transfers(paying)):
            fail("the payments are not the netting of the money")
    elif sheet.payments or sheet.residue_fen or any(x.fen for x in sheet.lines):
        fail("a statement without a rate carries money")


# a district's check ------------------------------------------------------------------------

#: Why a district disputes a claim (proto ``DisputedClaim.reason``).
MISSING_HERE = "MISSING_HERE"  # the statement lists it; the ledger has no such claim
NOT_COMPLETED_HERE = "NOT_COMPLETED_HERE"  # the ledger has it, not completed
MINUTES_DIFFER = "MINUTES_DIFFER"
PARTIES_DIFFER = "PARTIES_DIFFER"
SETTLED_BEFORE = "SETTLED_BEFORE"  # an earlier statement settled it already
OMITTED = "OMITTED"  # completed before the period's end, missing from the statement
DISPUTE_REASONS = frozenset({MISSING_HERE, NOT_COMPLETED_HERE, MINUTES_DIFFER,
                             PARTIES_DIFFER, SETTLED_BEFORE, OMITTED})


@dataclass(frozen=True, slots=True)
class Difference:
    """A claim on which a statement and a district's ledger differ."""

    claim_id: str
    reason: str
    statement_minutes: int = 0
    ledger_minutes: int = 0


@dataclass(frozen=True, slots=True)
class LedgerClaim:
    """A claim as a district's own ledger knows it."""

    claim_id: str
    creditor: str
    debtor: str
    minutes: int  # posted minutes once completed
    completed: bool
    settled_serial: int = 0  # the statement that settled it here (0: none yet)


def check_line(node_id: str, line: Line, listed: Sequence[SettledClaim],
               ledger: Mapping[str, LedgerClaim], omitted: Iterable[str] = ()
               ) -> tuple[Difference, ...]:
    """Whether a district's own records bear out its line of a statement.

    ``listed``: the claims the clearinghouse says the line settles (as GetSettlementClaims
    pages them); ``ledger``: the district's own claims by id (at least those listed);
    ``omitted``: claims the district completed before the period's end that no statement
    settled and ``listed`` lacks (the caller proves each from the log). No differences and
    a line that is the listed claims' sums and digest: countersign. Otherwise the
    differences, at most ``MAX_DISPUTED_CLAIMS``, are the dispute."""
    out: list[Difference] = []
    for c in listed:
        if node_id not in (c.creditor, c.debtor):
            out.append(Difference(c.claim_id, PARTIES_DIFFER, c.minutes, 0))
            continue
        mine = ledger.get(c.claim_id)
        if mine is None:
            out.append(Difference(c.claim_id, MISSING_HERE, c.minutes, 0))
        elif not mine.completed:
            out.append(Difference(c.claim_id, NOT_COMPLETED_HERE, c.minutes, 0))
        elif (mine.creditor, mine.debtor) != (c.creditor, c.debtor):
            out.append(Difference(c.claim_id, PARTIES_DIFFER, c.minutes, mine.minutes))
        elif mine.minutes != c.minutes:
            out.append(Difference(c.claim_id, MINUTES_DIFFER, c.minutes, mine.minutes))
        elif mine.settled_serial:
            out.append(Difference(c.claim_id, SETTLED_BEFORE, c.minutes, mine.minutes))
    for claim_id in sorted(set(omitted)):
        mine = ledger.get(claim_id)
        out.append(Difference(claim_id, OMITTED, 0, mine.minutes if mine else 0))
    out.sort(key=lambda d: d.claim_id)
    return tuple(out[:MAX_DISPUTED_CLAIMS])


def line_totals_hold(node_id: str, line: Line, listed: Sequence[SettledClaim]) -> bool:
    """Whether a line is exactly the sums and digest of the claims listed for it."""
    owed = sum(c.minutes for c in listed if c.creditor == node_id)
    owing = sum(c.minutes for c in listed if c.debtor == node_id)
    return (line.owed_minutes == owed and line.owing_minutes == owing
            and line.net_minutes == owed - owing and line.claims == len(listed)
            and line.claims_sha256 == claims_digest(node_id, listed))


# final ---------------------------------------------------------------------------------------


def is_final(districts: Iterable[str], countersigned: Iterable[str],
             overruled: Iterable[str]) -> bool:
    """A revision is final once every district on it has countersigned it or been
    overruled by a bureau decision upholding it."""
    return set(districts) <= set(countersigned) | set(overruled)


def default_treatment(on_default: OnDefault | str) -> OnDefault:
    try:
        return OnDefault(on_default)
    except ValueError:
        raise SettlementError("BAD_DEFAULT", 'a default is "carry" or "reserve"') from None


# the statement on the wire -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Statement:
    """A settlement statement (proto ``SettlementStatement``): which period, which log
    leaves ``[start, end)``, the quorum-cosigned head it cites, and its sheet."""

    serial: int
    revision: int
    period: str
    start: int
    end: int
    head_note: str
    closed_at: datetime
    previous_sha256: bytes
    policy_sha256: bytes
    on_default: str
    sheet: Sheet

    def __post_init__(self) -> None:
        if not 1 <= self.serial < 2**63 or not 1 <= self.revision < 2**31:
            raise SettlementError("MALFORMED", "a statement's serial and revision count from 1")
        Period(self.period)
        if not 0 <= self.start <= self.end < 2**63:
            raise SettlementError("MALFORMED", "a statement's leaves run from start to end")
        if len(self.previous_sha256) not in ((0,) if self.serial == 1 else (32,)):
            raise SettlementError("MALFORMED", "a statement names the one before it")
        if len(self.policy_sha256) not in (0, 32):
            raise SettlementError("MALFORMED", "a policy digest is 32 bytes")
        default_treatment(self.on_default)
        if self.closed_at.tzinfo is None:
            raise SettlementError("MALFORMED", "a statement's time carries a zone")
        check_sheet(self.sheet)


def _transfers(items: Iterable[Transfer]) -> list[pb.SettlementTransfer]:
    return [pb.SettlementTransfer(from_node_id=t.payer, to_node_id=t.payee, amount=t.amount)
            for t in items]


def statement_body(statement: Statement) -> bytes:
    """The serialised ``SettlementStatement`` the clearinghouse signs (kind
    ``settlement``)."""
    sheet = statement.sheet
    msg = pb.SettlementStatement(
        serial=statement.serial, revision=statement.revision, period=statement.period,
        start=statement.start, end=statement.end, head_note=statement.head_note,
        previous_sha256=statement.previous_sha256, policy_sha256=statement.policy_sha256,
        rate_fen_per_hour=sheet.rate_fen_per_hour, on_default=statement.on_default,
        lines=[pb.SettlementLine(node_id=x.node_id, opening_minutes=x.opening_minutes,
                                 net_minutes=x.net_minutes, owed_minutes=x.owed_minutes,
                                 owing_minutes=x.owing_minutes, claims=x.claims,
                                 claims_sha256=x.claims_sha256, fen=x.fen)
               for x in sheet.lines],
        flows=[pb.SettlementFlow(creditor_node_id=f.creditor, debtor_node_id=f.debtor,
                                 minutes=f.minutes, claims=f.claims) for f in sheet.flows],
        transfers=_transfers(sheet.transfers), payments=_transfers(sheet.payments),
        residue_fen=sheet.residue_fen,
        reserve_opening_minutes=sheet.reserve_opening_minutes, claims=sheet.claims,
        excluded_claim_ids=list(sheet.excluded))
    msg.closed_at.FromDatetime(statement.closed_at.astimezone(UTC))
    return msg.SerializeToString(deterministic=True)


def parse_statement(body: bytes) -> Statement:
    """The statement a (verified) ``settlement`` body states, checked throughout: every
    figure must be what ``compute`` makes of the lines' own numbers. SettlementError
    (MALFORMED or INCONSISTENT) says what does not hold."""
    from google.protobuf.message import DecodeError

    try:
        msg = pb.SettlementStatement.FromString(body)
    except DecodeError:
        raise SettlementError("MALFORMED", "the body is not a SettlementStatement") from None
    if not msg.HasField("closed_at"):
        raise SettlementError("MALFORMED", "a statement says when it was closed")
    try:
        closed_at = msg.closed_at.ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError):
        raise SettlementError("MALFORMED", "a statement's time is not a time") from None
    sheet = Sheet(
        lines=tuple(Line(x.node_id, x.opening_minutes, x.net_minutes, x.owed_minutes,
                         x.owing_minutes, x.claims, bytes(x.claims_sha256), x.fen)
                    for x in msg.lines),
        flows=tuple(Flow(f.creditor_node_id, f.debtor_node_id, f.minutes, f.claims)
                    for f in msg.flows),
        transfers=tuple(Transfer(t.from_node_id, t.to_node_id, t.amount)
                        for t in msg.transfers),
        payments=tuple(Transfer(t.from_node_id, t.to_node_id, t.amount) for t in msg.payments),
        residue_fen=msg.residue_fen, reserve_opening_minutes=msg.reserve_opening_minutes,
        claims=msg.claims, rate_fen_per_hour=msg.rate_fen_per_hour,
        excluded=tuple(msg.excluded_claim_ids))
    if list(sheet.excluded) != sorted(set(sheet.excluded)):
        raise SettlementError("MALFORMED", "the excluded claims are not sorted and distinct")
    statement = Statement(msg.serial, msg.revision, msg.period, msg.start, msg.end,
                          msg.head_note, closed_at, bytes(msg.previous_sha256),
                          bytes(msg.policy_sha256), msg.on_default, sheet)
    if statement_body(statement) != body:
        raise SettlementError("MALFORMED", "the statement is not in its one encoding")
    return statement


# recomputing from the log alone ------------------------------------------------------------

#: The log leaf kinds settlement reads (``clearinghouse.usecases.log``): a Submit of a
#: claim message records the state it led to; a statement, a decision and a default are
#: recorded with their envelopes.
CLAIM_LEAF = "claim"


@dataclass(frozen=True, slots=True)
class Mismatch:
    """A statement in the log that its recomputation from the log does not bear out."""

    serial: int
    revision: int
    log_index: int
    message: str


@dataclass(slots=True)
class LogReplay:
    """Recomputes every settlement statement in a log from the log's own leaves, in order.

    Feed it each leaf (``feed(index, entry)``, a parsed ``timebank.v1.LogEntry``; the
    envelopes' signatures are the caller's to check — an auditor checks them anyway).
    Completed claims come from claim leaves; a statement's claims are those completed
    below its end that no earlier statement (in its latest revision) settled, less the
    claims a decision excluded; its openings come from carry defaults on the statement
    before it. Each statement must be exactly ``compute`` of those: one mismatch is a
    clearinghouse that signed figures its own log does not support."""

    completed: dict[str, SettledClaim] = field(default_factory=dict)
    settled_by: dict[str, int] = field(default_factory=dict)  # claim id → serial
    statements: dict[int, Statement] = field(default_factory=dict)  # latest revision
    carried: dict[int, dict[str, int]] = field(default_factory=dict)  # serial → openings
    mismatches: list[Mismatch] = field(default_factory=list)
    checked: int = 0

    def feed(self, index: int, entry: pb.LogEntry) -> None:
        if entry.kind == CLAIM_LEAF and entry.state == pb.CLAIM_STATE_COMPLETED:
            kind = "move" if entry.claim_kind == pb.CLAIM_KIND_MOVE else "redemption"
            self.completed[entry.claim_id] = SettledClaim(
                entry.claim_id, entry.creditor_node_id, entry.debtor_node_id,
                entry.minutes, kind, index)
        elif entry.kind == STATEMENT_KIND:
            self._statement(index, entry)
        elif entry.kind == DEFAULT_KIND:
            self._default(entry)

    def _statement(self, index: int, entry: pb.LogEntry) -> None:
        envelope = pb.Envelope.FromString(entry.envelope)
        try:
            statement = parse_statement(envelope.body)
        except SettlementError as e:
            self.mismatches.append(Mismatch(0, 0, index, f"unreadable statement: {e.message}"))
            return
        serial = statement.serial
        # a later revision replaces the earlier: its claims are settled by it, not by both
        for claim_id in [c for c, s in self.settled_by.items() if s == serial]:
            del self.settled_by[claim_id]
        excluded = set(statement.sheet.excluded)
        mine = [c for c in self.completed.values()
                if c.completed_index < statement.end and c.claim_id not in self.settled_by
                and c.claim_id not in excluded]
        try:
            expected = compute(mine, [x.node_id for x in statement.sheet.lines],
                               openings=self.carried.get(serial - 1, {}),
                               rate_fen_per_hour=statement.sheet.rate_fen_per_hour,
                               excluded=excluded)
        except SettlementError as e:
            expected = None
            why = e.message
        if expected != statement.sheet:
            self.mismatches.append(Mismatch(
                serial, statement.revision, index,
                why if expected is None else _first_difference(expected, statement.sheet)))
        for c in mine:
            self.settled_by[c.claim_id] = serial
        self.statements[serial] = statement
        self.checked += 1

    def _default(self, entry: pb.LogEntry) -> None:
        body = pb.Envelope.FromString(entry.envelope).body
        act = pb.SettlementDefault.FromString(body)
        if act.treatment == OnDefault.CARRY.value and act.unpaid_minutes > 0:
            openings = self.carried.setdefault(act.serial, {})
            openings[act.node_id] = openings.get(act.node_id, 0) - act.unpaid_minutes


def _first_difference(expected: Sheet, stated: Sheet) -> str:
    for mine, theirs in zip(expected.lines, stated.lines, strict=False):
        if mine != theirs:
            return (f"district {theirs.node_id}: the log gives net {mine.net_minutes} min over "
                    f"{mine.claims} claims, the statement {theirs.net_minutes} over "
                    f"{theirs.claims}")
    if len(expected.lines) != len(stated.lines):
        return "the statement's districts are not the log's"
    return "the statement's flows, transfers or money are not the log's"
