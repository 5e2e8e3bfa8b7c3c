"""The city directory, as this node asks it (``LookupPerson``), and the worker that asks
it for orders whose payer moved.

``Directory.look_up`` answers where a PersonRef's hours are kept: a district, none, or
no answer (the clearinghouse away or answering nonsense). It never raises: the caller
decides what no answer means. The api asks it before enrolling someone as this
district's own (``people.enrol_person``). ``Rehomer`` asks it for every order whose
payment a district refused because it no longer keeps the payer's hours
(NOT_HOME_DISTRICT) and hands the answer to ``orders.redirect_payment``, which notes the
new home and asks it with a fresh claim, or cancels the order saying why.

The answer is not signed: it is a hint. The clearinghouse checks its own directory
again when it records the fresh claim, so a wrong answer costs a refused claim (and,
after ``claims.MAX_REDIRECTS`` of them, a cancelled order), never misplaced hours.
"""

from __future__ import annotations

import threading

import grpc
import structlog

from node.domain.directory import HomeLookup
from node.link.connection import CALL_TIMEOUT_SECONDS, Connection
from node.link.supervise import ClearinghouseAway
from node.usecases import orders
from node.usecases.app import NodeApp
from runtime.errors import Refusal
from runtime.rpcerrors import error_reason
from timebank.ids import is_node_id
from timebank.v1 import clearing_pb2 as pb

log = structlog.get_logger("node.clearing")

#: How often the rehomer looks for orders whose payer's home it should ask about.
REHOME_SECONDS = 0.5
#: The most orders asked about in one round.
REHOME_BATCH = 50
#: How long one look-up may take: an enrolment waits for it.
LOOKUP_TIMEOUT_SECONDS = min(5.0, CALL_TIMEOUT_SECONDS)


class Directory:
    """Looks PersonRefs up in the city directory over the link's channel."""

    def __init__(self, connection: Connection) -> None:
        self._conn = connection

    def look_up(self, person_ref: str) -> HomeLookup:
        try:
            answer = self._conn.stub.LookupPerson(pb.LookupPersonRequest(person_ref=person_ref),
                                                  timeout=LOOKUP_TIMEOUT_SECONDS)
        except grpc.RpcError as e:
            code = e.code()
            if code is grpc.StatusCode.NOT_FOUND and error_reason(e) == "UNKNOWN_PERSON":
                return HomeLookup.unregistered()
            name = code.name if code is not None else "UNKNOWN"
            return HomeLookup.unreachable(f"{name}: {e.details() or 'no details'}")
        if answer.person_ref != person_ref or not is_node_id(answer.home_node_id):
            return HomeLookup.unreachable("the clearinghouse answered for another person "
                                          "or named no district")
        return HomeLookup.at(answer.home_node_id)


class Rehomer:
    """Asks the directory about orders whose payer moved, until ``stop``; ``wake_sender``
    is set whenever a fresh claim was queued."""

    def __init__(self, app: NodeApp, directory: Directory, stop: threading.Event,
                 wake_sender: threading.Event, *, interval: float = REHOME_SECONDS) -> None:
        if interval <= 0:
            raise ValueError("the rehoming interval must be positive")
        self._app = app
        self._directory = directory
        self._stop = stop
        self._wake_sender = wake_sender
        self.interval = interval

    def run(self) -> None:
        while not self._stop.wait(self.interval):
            self.rehome_once()

    def rehome_once(self) -> int:
        """Ask about every order waiting now; return how many were settled (asked again
        elsewhere or cancelled). Raises ``ClearinghouseAway`` when the directory cannot
        be reached (the supervisor backs off; the orders wait)."""
        done = 0
        for question in self._app.query(orders.awaiting_home, REHOME_BATCH):
            if self._stop.is_set():
                break
            answer = self._directory.look_up(question.person_ref)
            if not answer.reached:
                raise ClearinghouseAway(f"the city directory: {answer.detail}")
            try:
                settled = self._app.execute(orders.redirect_payment, question.order_id,
                                            question.claim_id, answer)
            except Refusal as e:  # e.g. too many open claims: this order waits, not others
                log.warning("payer's new home not asked yet; will try again",
                            order_id=question.order_id, home_node_id=answer.home_node_id,
                            reason=e.reason, detail=e.message)
                continue
            if settled is not None:
                done += 1
                log.info("payer's home looked up", order_id=question.order_id,
                         refused_claim_id=question.claim_id,
                         home_node_id=answer.home_node_id or None,
                         order_state=settled.record.state,
                         claim_id=settled.record.claim_id)
        if done:
            self._wake_sender.set()
        return done
