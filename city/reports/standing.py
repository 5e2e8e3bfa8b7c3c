"""Where each district stands on a statement, from the signed acts on it (a
``Settlement`` as the clearinghouse serves it, or as a node kept it as the evidence that
made the statement final there): one copy for every report, the command's and the web
console's. Pure: it reads the envelopes it is given."""

from __future__ import annotations

from timebank import settlement as st
from timebank.envelope import decode
from timebank.v1 import clearing_pb2 as pb

from .tables import COUNTERSIGNED, DISPUTED, OVERRULED, PENDING, Signoff


def signoffs(found: pb.GetSettlementResponse, statement: st.Statement) -> tuple[Signoff, ...]:
    """Each district's standing on ``statement`` (a revision): countersigned, overruled
    by a decision that upheld it, disputed, or pending. The acts were verified when they
    were stored (by the clearinghouse, or by the node before it kept them)."""
    rev = statement.revision
    signs = [pb.SettlementCountersign.FromString(decode(e).body) for e in found.countersigns]
    disputes = [pb.SettlementDispute.FromString(decode(e).body) for e in found.disputes]
    decisions = [pb.SettlementDecision.FromString(decode(e).body) for e in found.decisions]
    signed = {c.node_id for c in signs if c.revision == rev}
    disputed = {d.node_id for d in disputes if d.revision == rev}
    overruled = {n for d in decisions if d.revision == rev and not d.revise
                 for n in d.overruled_node_ids}
    out = []
    for line in statement.sheet.lines:
        n = line.node_id
        status = (COUNTERSIGNED if n in signed else OVERRULED if n in overruled
                  else DISPUTED if n in disputed else PENDING)
        out.append(Signoff(n, status))
    return tuple(out)
