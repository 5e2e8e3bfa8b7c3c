"""A real settlement statement for report tests: claims among Nanjing's districts,
computed, encoded, signed and parsed back with the contract's own functions, so the
reports are tested on what a clearinghouse would sign and a district would read."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime

from city.reports.tables import (
    COUNTERSIGNED,
    DISPUTED,
    ActivityRow,
    District,
    PeriodPosition,
    ReportData,
    Signoff,
)
from timebank import envelope, keys
from timebank.settlement import (
    STATEMENT_KIND,
    SettledClaim,
    Statement,
    compute,
    parse_statement,
    statement_body,
)

#: Nanjing's districts (and the Jiangbei new area) by their administrative codes.
NANJING = {
    "320102": "玄武区", "320104": "秦淮区", "320105": "建邺区", "320106": "鼓楼区",
    "320111": "浦口区", "320113": "栖霞区", "320114": "雨花台区", "320115": "江宁区",
    "320116": "六合区", "320117": "溧水区", "320118": "高淳区", "320191": "江北新区",
}
CATEGORIES = ("助餐 meals", "保洁 cleaning", "陪诊 escort", "理发 haircut")
STREETS = ("东山街道", "湖南路街道", "仙林街道", "秣陵街道")


def claims(n: int, districts: list[str], seed: int = 7) -> list[SettledClaim]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        creditor, debtor = rng.sample(districts, 2)
        out.append(SettledClaim(str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                                creditor, debtor, rng.choice((30, 45, 60, 75, 90, 120)),
                                "redemption" if i % 7 else "move", 100 + i))
    return out


def statement(districts: list[str], n_claims: int = 400, rate: int = 100,
              seed: int = 7) -> tuple[Statement, bytes]:
    """A statement and its envelope identity, signed with a fresh Ed25519 key."""
    sheet = compute(claims(n_claims, districts, seed), districts, rate_fen_per_hour=rate)
    draft = Statement(1, 1, "2026-11", 0, 100 + n_claims,
                      "timebank.nanjing/log\n520\nq83mUQ8kG4cZ+0t2HctN7vOq1y9cVTUWhwGP5I3YyKk=\n",
                      datetime(2026, 12, 1, 2, 0, tzinfo=UTC), b"", b"\x11" * 32, "carry",
                      sheet)
    body = statement_body(draft)
    parsed = parse_statement(body)
    signed = envelope.sign(STATEMENT_KIND, body, "clearinghouse", keys.generate())
    return parsed, envelope.identity(signed)


def report(n_districts: int = 12, *, n_claims: int = 400, rate: int = 100,
           scope: str = "clearinghouse") -> ReportData:
    nodes = sorted(NANJING)[:n_districts]
    stmt, identity = statement(nodes, n_claims, rate)
    signoffs = tuple(Signoff(n, DISPUTED if i == 1 else COUNTERSIGNED)
                     for i, n in enumerate(nodes) if i != 2)
    activity = tuple(
        ActivityRow(month, node, STREETS[i % len(STREETS)] if scope != "clearinghouse" else "",
                    CATEGORIES[(i + j) % len(CATEGORIES)], 3 + i + j, 60 * (1 + i) + 15 * j)
        for i, node in enumerate(nodes) for j, month in enumerate(("2026-10", "2026-11")))
    history = tuple(PeriodPosition(p, x.node_id, x.net_minutes * k)
                    for k, p in ((1, "2026-09"), (-1, "2026-10"), (2, "2026-11"))
                    for x in stmt.sheet.lines)
    return ReportData(scope=scope, period="2026-11",
                      generated_at=datetime(2026, 12, 1, 8, 30, tzinfo=UTC),
                      districts=tuple(District(n, NANJING[n]) for n in nodes),
                      statement=stmt, envelope_sha256=identity, signoffs=signoffs,
                      final=False, activity=activity, history=history)
