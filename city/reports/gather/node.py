"""What a district's report shows, read from the node's own database (read-only): its
recorded orders in the period by service category and service point street, the
districts' names from the city-signed admissions it holds, and, once the node has
stored settlement statements (node migration 0010), the period's statement as the node
received it, its own answer to it and its line over the periods before.

The node knows only its own countersignature; the others' are the clearinghouse's
report's to show.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Connection,
    Integer,
    LargeBinary,
    String,
    and_,
    column,
    func,
    inspect,
    or_,
    select,
    table,
)
from sqlalchemy.sql.expression import TableClause

from city.reports import standing
from city.reports.tables import (
    COUNTERSIGNED,
    DISPUTED,
    ORDERS,
    PENDING,
    ActivityRow,
    District,
    PeriodPosition,
    ReportData,
    Signoff,
)
from node.storage.schema import CityEnvelope, Order, Person, ServicePoint
from timebank import envelope
from timebank.admissions import AdmissionsError, certificate_of, parse_signed
from timebank.citytime import CITY_TZ
from timebank.settlement import SettlementError, Statement, month_period, parse_statement
from timebank.v1 import clearing_pb2 as pb

#: The node's own answer to a statement (``settlements.state``) as a countersignature.
_ANSWER = {"checked": PENDING, "countersigned": COUNTERSIGNED, "disputed": DISPUTED,
           "final": COUNTERSIGNED, "posted": COUNTERSIGNED}
_FINAL = ("final", "posted")
#: The most periods of history a report draws.
MAX_HISTORY = 240


def settlements_table() -> TableClause:
    """The columns a report reads of the node's ``settlements`` table (node migration
    0010): read by name, so a node whose schema predates it is told so, not crashed."""
    return table("settlements", column("serial", BigInteger), column("revision", Integer),
                 column("period", String), column("envelope", LargeBinary),
                 column("state", String), column("net_minutes", BigInteger),
                 column("evidence", LargeBinary))


def district_names(conn: Connection) -> dict[str, str]:
    """Node id → district name, from the admission certificates the node holds (each
    verified under the city key when it was stored); the latest serial wins."""
    out: dict[str, tuple[int, str]] = {}
    t = CityEnvelope.__table__
    for (raw,) in conn.execute(select(t.c.envelope).where(t.c.kind == "admission")):
        try:
            cert = certificate_of(parse_signed(bytes(raw)).body)
        except (AdmissionsError, envelope.EnvelopeError, ValueError):
            continue  # not a report's business: `timebank audit` names bad rows
        if cert.serial >= out.get(cert.node_id, (0, ""))[0]:
            out[cert.node_id] = (cert.serial, cert.district)
    return {k: v for k, (_, v) in out.items()}


def order_activity(conn: Connection, node_id: str, label: str,
                   categories: Mapping[str, str]) -> tuple[ActivityRow, ...]:
    """Recorded orders served in the month ``label`` (by service day, city time), by
    category and the street of the recipient's service point."""
    period = month_period(label)
    assert period.starts is not None and period.ends is not None
    first = period.starts.astimezone(CITY_TZ).date()
    after = period.ends.astimezone(CITY_TZ).date()
    o, p, sp = Order.__table__, Person.__table__, ServicePoint.__table__
    in_month = or_(and_(o.c.service_day >= first, o.c.service_day < after),
                   and_(o.c.service_day.is_(None), o.c.recorded_at >= period.starts,
                        o.c.recorded_at < period.ends))
    rows = conn.execute(
        select(o.c.category, sp.c.street, func.count(), func.sum(o.c.recorded_minutes))
        .select_from(o.join(p, p.c.id == o.c.recipient_id)
                     .outerjoin(sp, sp.c.id == p.c.service_point_id))
        .where(o.c.state == "recorded", in_month)
        .group_by(o.c.category, sp.c.street)).all()
    return tuple(sorted(
        ActivityRow(label, node_id, street or "", _category(code, categories), int(n),
                    int(minutes or 0))
        for code, street, n, minutes in rows))


def _category(code: str, categories: Mapping[str, str]) -> str:
    name = categories.get(code)
    return f"{name} {code}" if name else code


def node_report(conn: Connection, node_id: str, district: str, label: str,
                categories: Mapping[str, str], now: datetime) -> ReportData:
    """The district's report for period ``label`` from its own database."""
    names = {**district_names(conn), node_id: district}
    notes: list[str] = []
    try:
        activity = order_activity(conn, node_id, label, categories)
    except SettlementError:
        activity = ()
        notes.append("订单明细按日历月统计（--period 写作 年-月）。 / Orders are counted by "
                     "calendar month (--period YYYY-MM).")
    statement: Statement | None = None
    identity = b""
    signoffs: tuple[Signoff, ...] = ()
    final = False
    history: tuple[PeriodPosition, ...] = ()
    if not inspect(conn).has_table("settlements"):
        notes.append("本节点数据库尚无结算表（节点迁移 0010），只报告订单。 / This node's "
                     "database has no settlements yet (node migration 0010): orders only.")
    else:
        found = _statement(conn, label)
        if found is None:
            notes.append(f"本节点尚未收到 {label} 的结算单。 / This node holds no statement "
                         f"for {label} yet.")
        else:
            statement, identity, state, evidence = found
            final = state in _FINAL
            if evidence is not None:  # the acts that made it final here: every district's
                signoffs = standing.signoffs(evidence, statement)
            else:
                if statement.sheet.line(node_id) is not None:
                    signoffs = (Signoff(node_id, _ANSWER.get(state, PENDING)),)
                notes.append("会签状态只列本区；其他区的见结算中心报告。 / Only this "
                             "district's countersignature is known here until the statement "
                             "is final; the others' are in the bureau's report.")
        history = _history(conn, node_id)
    return ReportData(
        scope=node_id, period=label, generated_at=now,
        districts=tuple(District(k, v[:64]) for k, v in sorted(names.items())),
        statement=statement, envelope_sha256=identity, signoffs=signoffs, final=final,
        activity=activity, activity_kind=ORDERS, history=history,
        note="\n".join(notes))


def _statement(conn: Connection, label: str
               ) -> tuple[Statement, bytes, str, pb.GetSettlementResponse | None] | None:
    """The latest revision the node holds of the latest statement of period ``label``,
    its identity, the node's state for it, and the evidence that made it final here."""
    t = settlements_table()
    row = conn.execute(
        select(t.c.envelope, t.c.state, t.c.evidence).where(t.c.period == label)
        .order_by(t.c.serial.desc(), t.c.revision.desc()).limit(1)).first()
    if row is None:
        return None
    signed = parse_signed(bytes(row[0]))
    evidence = pb.GetSettlementResponse.FromString(bytes(row[2])) if row[2] is not None else None
    return parse_statement(signed.body), envelope.identity(signed), str(row[1]), evidence


def _history(conn: Connection, node_id: str) -> tuple[PeriodPosition, ...]:
    """This district's net in each statement it holds (latest revision of each serial),
    oldest first."""
    t = settlements_table()
    rows = conn.execute(
        select(t.c.serial, t.c.revision, t.c.period, t.c.net_minutes)
        .order_by(t.c.serial.desc(), t.c.revision.desc()).limit(4 * MAX_HISTORY)).all()
    latest: dict[int, tuple[str, int]] = {}
    for serial, _revision, period, net in rows:
        latest.setdefault(int(serial), (str(period), int(net)))
    ordered = sorted(latest.items())[-MAX_HISTORY:]
    return tuple(PeriodPosition(period, node_id, net) for _, (period, net) in ordered)

