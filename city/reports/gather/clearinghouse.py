"""What the bureau's report shows, read through the clearinghouse's use-cases: the
period's statement as it stands (its latest revision, every district's countersignature,
dispute or overruling, whether it is final), the districts' names from their admissions,
each district's net over the statements so far, and the claims the statement settles
counted by the district owed (where the service was given, or the person moved to),
claim kind and month of completion (city time). A period not closed yet counts the
completed claims of that calendar month still waiting for a statement.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select

from city.reports.standing import signoffs
from city.reports.tables import (
    CLAIMS,
    HISTORY_STATEMENTS,
    ActivityRow,
    District,
    PeriodPosition,
    ReportData,
    claim_rows,
)
from city.reports.words import CLAIMS_NOTE
from clearinghouse.storage.schema import ClaimRow
from clearinghouse.usecases import admission, settlement
from clearinghouse.usecases.app import ClearinghouseApp, Tx
from runtime.errors import NotFound
from timebank import settlement as st
from timebank.envelope import decode, identity
from timebank.v1 import clearing_pb2 as pb

_CHUNK = 5000


def claim_activity(tx: Tx, serial: int | None, label: str) -> tuple[ActivityRow, ...]:
    """Claims settled by statement ``serial`` (or, with None, completed claims of month
    ``label`` no statement settled yet), by creditor, kind and month of completion."""
    c = ClaimRow.__table__
    q = select(c.c.creditor, c.c.kind, c.c.posted_minutes, c.c.updated_at)
    if serial is not None:
        q = q.where(c.c.settled_serial == serial)
    else:
        period = st.month_period(label)
        q = q.where(c.c.state == "completed", c.c.settled_serial.is_(None),
                    c.c.updated_at >= period.starts, c.c.updated_at < period.ends)
    result = tx.repo.conn.execute(q.execution_options(yield_per=_CHUNK))
    try:
        return claim_rows((at, str(creditor), str(kind), int(posted or 0))
                          for creditor, kind, posted, at in result)
    finally:
        result.close()


def history(tx: Tx, last: int) -> tuple[PeriodPosition, ...]:
    """Each district's net in statements 1..``last`` (latest revisions), oldest first."""
    out: list[PeriodPosition] = []
    for serial in range(max(1, last - HISTORY_STATEMENTS + 1), last + 1):
        found = settlement.get(tx, serial)
        s = st.parse_statement(decode(found.statements[-1]).body)
        out += [PeriodPosition(s.period, x.node_id, x.net_minutes) for x in s.sheet.lines]
    return tuple(out)


def clearinghouse_report(app: ClearinghouseApp, label: str, now: datetime) -> ReportData:
    """The bureau's report for period ``label``."""
    names = {a.node_id: a.district for a in app.query(admission.admissions)}
    try:
        found: pb.GetSettlementResponse | None = app.query(settlement.get, 0, label)
    except NotFound:
        found = None
    districts = tuple(District(k, v[:64]) for k, v in sorted(names.items()))
    note = CLAIMS_NOTE
    if found is None:
        try:
            activity = app.query(claim_activity, None, label)
        except st.SettlementError:
            activity = ()
        return ReportData(scope="clearinghouse", period=label, generated_at=now,
                          districts=districts, activity=activity, activity_kind=CLAIMS,
                          note=note + "\n本期间尚未结算：明细为尚待结算的已完成账目。 / This "
                          "period is not closed yet: the counts are completed claims "
                          "awaiting settlement.")
    envelope = decode(found.statements[-1])
    statement = st.parse_statement(envelope.body)
    return ReportData(
        scope="clearinghouse", period=label, generated_at=now, districts=districts,
        statement=statement, envelope_sha256=identity(envelope),
        signoffs=signoffs(found, statement), final=found.final,
        activity=app.query(claim_activity, statement.serial, label), activity_kind=CLAIMS,
        history=app.query(history, statement.serial), note=note)
