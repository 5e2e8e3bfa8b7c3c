"""The witness (ADR 0007, 0014): this district cosigns the clearinghouse's tree heads.

Every ``interval`` seconds it asks for the latest head and cosigns it if it extends the
last one this node verified (by a consistency proof), is newer than the last it
cosigned, and names a roster of districts the city signed, no older than the roster of
the last head it cosigned, with the district count that roster gives
(``timebank.roster.check_head``): a quorum is counted over that roster, so a witness
never vouches for a head whose quorum the clearinghouse chose. The head is stored as
cosigned before the cosignature leaves, so a crash can never lead to cosigning two
inconsistent heads.
"""

from __future__ import annotations

import threading

import structlog

from node.link.city import CityView
from node.link.connection import CALL_TIMEOUT_SECONDS, Connection
from node.link.verified_log import VerifiedLog, accepted
from node.usecases import tree_heads
from node.usecases.app import NodeApp
from timebank import checkpoint as notes
from timebank import roster, transparency
from timebank.v1 import clearing_pb2 as pb

log = structlog.get_logger("node.clearing")

#: How often the node looks for a new tree head to cosign.
WITNESS_SECONDS = 2.0


class Witness:
    def __init__(self, app: NodeApp, connection: Connection, verified: VerifiedLog,
                 stop: threading.Event, city: CityView, *,
                 interval: float = WITNESS_SECONDS) -> None:
        if interval <= 0:
            raise ValueError("the witness's interval must be positive")
        self._app = app
        self._city = city
        self._conn = connection
        self._log = verified
        self._stop = stop
        self.interval = interval

    def run(self) -> None:
        while not self._stop.wait(self.interval):
            self.witness_once()

    def witness_once(self) -> int:
        """Cosign the clearinghouse's latest tree head if it extends the last one this
        node verified and is newer than the last it cosigned. Returns the size cosigned
        (0 if nothing was)."""
        latest = self._conn.stub.GetTreeHead(pb.GetTreeHeadRequest(),
                                             timeout=CALL_TIMEOUT_SECONDS).head
        rosters = self._rosters(latest.note)
        known = self._log.snapshot()
        if latest.size < known.size:
            return 0  # older than one already verified: look again next round
        # Fetched without the lock, which the sender needs to apply receipts ...
        proof = self._conn.consistency(known.size, latest.size)
        with self._log.lock:
            current = self._log.current()
            if current.head != known.head:  # ... unless it verified another head meanwhile
                if latest.size < current.size:
                    return 0
                known, proof = current, self._conn.consistency(current.size, latest.size)
            done = self._app.query(tree_heads.cosigned, self._conn.log_keys)
            if done is not None and latest.size <= done.size:
                return 0
            view = accepted(known, latest.note, proof)
            head = view.head
            assert head is not None
            last_epoch = 0 if done is None or done.roster is None else done.roster[0]
            try:
                roster.check_head(head, rosters, last_epoch)
            except transparency.LogError as e:
                log.error("refusing to cosign a tree head: its roster of districts is not "
                          "the city's", size=head.size, problem=str(e))
                return 0
            self._app.execute(tree_heads.store, head, cosigned=True)
            self._log.hold(view)
        text = notes.SignedNote.parse(head.note).text
        line = notes.cosign(text, transparency.witness_name(self._conn.node_id), self._conn.key,
                            int(self._app.clock.now().timestamp()))
        body = pb.CosignBody(node_id=self._conn.node_id, size=head.size,
                             signature_line=line.rstrip("\n"))
        self._conn.stub.AddCosignature(self._conn.sign("cosign", body.SerializeToString()),
                                       timeout=CALL_TIMEOUT_SECONDS)
        return head.size

    def _rosters(self, note: str) -> dict[bytes, roster.Roster]:
        """The city-signed rosters this node knows, by digest; asked for again first if
        the head names one it does not know (a roster the city signed since)."""
        try:
            named = transparency.check_head(note, self._conn.log_keys).roster
        except transparency.LogError:
            self._city.refresh()  # the city may have rotated the clearinghouse's key since
            try:
                named = transparency.check_head(note, self._conn.log_keys).roster
            except transparency.LogError:
                named = None  # refused below, by the log's own checks
        return self._city.rosters(None if named is None else named[1])
