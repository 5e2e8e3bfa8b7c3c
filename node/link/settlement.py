"""The settler (issue 16, ADR 0019): this district's side of each settlement period.

Every ``interval`` seconds it asks the clearinghouse for the statement this node settles
next (one after the last it posted, ``GetSettlement``) and, for its latest revision:

1. verifies it (``settlement.verify_statement``: the clearinghouse's signature under the
   keys the city gave it, its figures, the cited head final under a city-signed roster)
   and records it; a statement that fails is logged and counted, and nothing changes;
2. unless it answered already, reads the claims the clearinghouse lists for this
   district's line (``GetSettlementClaims``, page by page, bounded by the line's own
   count), proves from the log that each claim it completed and no statement settled
   but the list lacks completed at or after the period's end (an inclusion proof in a
   head consistent with the cited one; at most ``MAX_OMITTED_CHECKS`` a round), and
   answers: countersign or dispute, through the outbox (``settlement.decide``);
3. checks every countersignature and decision on it itself (``settlement.finality``) and,
   once it is final, posts it in one transaction (``settlement.post``).

A refusal is logged and waited out; the ``supervise`` loop backs off on any failure, so
the settler never stops the node. A clearinghouse without settlement (UNIMPLEMENTED) or
with no statement yet (NOT_FOUND) is simply nothing to do.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import grpc
import structlog
from google.protobuf.message import DecodeError

from node import metrics
from node.domain.settlement import SettlementState
from node.link.city import CityView
from node.link.connection import CALL_TIMEOUT_SECONDS, Connection
from node.usecases import settlement
from node.usecases.app import NodeApp
from runtime.errors import Refusal
from timebank import transparency
from timebank.settlement import MAX_CLAIMS_PAGE, SettledClaim, SettlementError
from timebank.v1 import clearing_pb2 as pb

log = structlog.get_logger("node.settlement")

#: How often the node looks for a statement to check, answer or post.
SETTLEMENT_SECONDS = 30.0
#: How long a statement whose only differences are claims not completed here yet (their
#: completion's delivery on its way) waits before it is disputed.
LAG_GRACE_SECONDS = 60.0
#: The most batches of inclusion proofs one round asks for (each MAX_OMITTED_CHECKS).
PROOF_BATCHES = 8
_KINDS = {pb.CLAIM_KIND_REDEMPTION: "redemption", pb.CLAIM_KIND_MOVE: "move"}


@dataclass(slots=True)
class Round:
    """What one round did (for tests and logs)."""

    serial: int = 0
    revision: int = 0
    state: str = ""  # the statement's state here after the round ("" : none found)
    refused: str = ""  # why the statement was refused, if it was
    omitted: list[str] = field(default_factory=list)
    unproven: int = 0
    posted: settlement.Posted | None = None


class Settler:
    """Settles statements every ``interval`` seconds until ``stop``."""

    def __init__(self, app: NodeApp, connection: Connection, stop: threading.Event,
                 city: CityView, *, interval: float = SETTLEMENT_SECONDS,
                 lag_grace: float = LAG_GRACE_SECONDS,
                 proof_batch: int = settlement.MAX_OMITTED_CHECKS) -> None:
        if interval <= 0 or lag_grace < 0:
            raise ValueError("the settler's interval must be positive")
        if not 0 < proof_batch <= settlement.MAX_OMITTED_CHECKS:
            raise ValueError(f"a batch of proofs is 1 to {settlement.MAX_OMITTED_CHECKS}")
        self._app = app
        self._conn = connection
        self._stop = stop
        self._city = city
        self.interval = interval
        self.lag_grace = lag_grace
        self.proof_batch = proof_batch
        self._first_seen: dict[tuple[int, int], float] = {}  # monotonic, per statement
        #: Claims proven to have completed at or after a statement's end, per statement.
        self._after_end: dict[tuple[int, int], set[str]] = {}
        self._round = threading.Lock()

    def run(self) -> None:
        while not self._stop.wait(self.interval):
            self.settle_once()

    def settle_once(self) -> Round:
        """One round: fetch, check, answer, post (each as far as it can go now)."""
        with self._round:
            return self._settle()

    def _settle(self) -> Round:
        found = Round(serial=self._app.query(settlement.next_serial))
        try:
            answer: pb.GetSettlementResponse = self._conn.stub.GetSettlement(
                pb.GetSettlementRequest(serial=found.serial), timeout=CALL_TIMEOUT_SECONDS)
        except grpc.RpcError as e:
            if e.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.UNIMPLEMENTED):
                return found
            raise
        if not answer.statements:
            return found
        try:
            verified = settlement.verify_statement(answer.statements[-1], self._conn.log_keys,
                                                   self._city.rosters)
            if verified.statement.serial != found.serial:
                raise settlement.refuse("WRONG_SERIAL", "清算中心给出的不是所要的那一期",
                                        f"asked for statement {found.serial}, got "
                                        f"{verified.statement.serial}")
            record = self._app.execute(settlement.record_seen, verified)
        except Refusal as e:
            found.refused = f"{e.reason}: {e}"
            metrics.SETTLEMENT_REFUSED.labels(e.reason[:32]).inc()
            log.error("a settlement statement does not check out; nothing was done with it",
                      serial=found.serial, reason=e.reason, problem=str(e))
            return found
        try:
            return self._answer_and_post(found, verified, record, answer)
        except Refusal as e:
            found.refused = f"{e.reason}: {e}"
            metrics.SETTLEMENT_REFUSED.labels(e.reason[:32]).inc()
            log.error("a settlement statement could not be settled here; will look again",
                      serial=found.serial, reason=e.reason, problem=str(e))
            return found

    def _answer_and_post(self, found: Round, verified: settlement.Verified,
                         record: settlement.SettlementRecord,
                         answer: pb.GetSettlementResponse) -> Round:
        s = verified.statement
        found.revision, found.state = s.revision, record.state
        key = (s.serial, s.revision)
        self._first_seen.setdefault(key, time.monotonic())
        if record.state == SettlementState.POSTED:
            return found
        listed: list[SettledClaim] | None = None
        if record.state == SettlementState.CHECKED and s.sheet.line(self._app.node.node_id):
            listed = self._listed(verified)
            omitted, unproven = self._omitted(verified, listed)
            found.omitted, found.unproven = omitted, unproven
            waited = time.monotonic() - self._first_seen[key]
            record = self._app.execute(settlement.decide, s.serial, s.revision, listed,
                                       omitted, unproven,
                                       wait_for_lag=waited < self.lag_grace)
            found.state = record.state
            if record.state != SettlementState.CHECKED:
                log.info("answered a settlement statement", serial=s.serial,
                         revision=s.revision, answer=record.answer_kind,
                         differences=record.differences)
        final = settlement.finality(verified, answer, self._city.current(), self._city.keys())
        if final.refused:
            metrics.SETTLEMENT_REFUSED.labels("FORGED_ACT").inc(len(final.refused))
        for problem in final.refused:
            log.error("an act on a settlement statement does not verify; it is not counted",
                      serial=s.serial, problem=problem[:300])
        if not final.final:
            return found
        self._app.execute(settlement.mark_final, s.serial, s.revision,
                          answer.SerializeToString(deterministic=True))
        if listed is None:
            listed = self._listed(verified)
        found.posted = self._app.execute(settlement.post, s.serial, s.revision, listed,
                                         overruled=self._app.node.node_id in final.overruled)
        found.state = SettlementState.POSTED
        metrics.SETTLEMENT_POSTED_SERIAL.set(s.serial)
        log.info("posted a final settlement statement", serial=s.serial, revision=s.revision,
                 net_minutes=found.posted.net_minutes, claims=found.posted.claims_settled,
                 clearing_after=found.posted.clearing_after)
        self._first_seen.pop(key, None)
        self._after_end.pop(key, None)
        return found

    # ------------------------------------------------------------ the claims listed

    def _listed(self, verified: settlement.Verified) -> list[SettledClaim]:
        """The claims the clearinghouse lists for this district's line, every page,
        each checked to be a claim, in order, and no more than the line counts."""
        s = verified.statement
        node_id = self._app.node.node_id
        line = s.sheet.line(node_id)
        expected = 0 if line is None else line.claims
        if expected > settlement.MAX_LINE_CLAIMS:
            raise settlement.refuse("LINE_TOO_LARGE", "本区行的请求过多，无法逐笔核对",
                                    f"the line lists {expected} claims; a node checks at "
                                    f"most {settlement.MAX_LINE_CLAIMS}")
        out: list[SettledClaim] = []
        after = ""
        for _ in range(expected // MAX_CLAIMS_PAGE + 2):
            page: pb.GetSettlementClaimsResponse = self._conn.stub.GetSettlementClaims(
                pb.GetSettlementClaimsRequest(serial=s.serial, revision=s.revision,
                                              node_id=node_id, after_claim_id=after),
                timeout=CALL_TIMEOUT_SECONDS)
            if len(page.claims) > MAX_CLAIMS_PAGE:
                raise _bad_list(f"a page of {len(page.claims)} claims")
            for ref in page.claims:
                try:
                    claim = SettledClaim(ref.claim_id, ref.creditor_node_id, ref.debtor_node_id,
                                         ref.minutes, _KINDS.get(ref.kind, "?"),
                                         ref.completed_index)
                except SettlementError as e:
                    raise _bad_list(str(e)) from None
                if claim.claim_id <= after:
                    raise _bad_list("claims out of order")
                out.append(claim)
                after = claim.claim_id
            if len(out) > expected:
                raise _bad_list(f"more claims than the line's {expected}")
            if not page.more or not page.claims:
                return out
        raise _bad_list("more pages than the line's count needs")

    # ------------------------------------------------------------ omitted claims

    def _omitted(self, verified: settlement.Verified, listed: list[SettledClaim],
                 ) -> tuple[list[str], int]:
        """Of the claims completed here, settled by no statement and missing from the
        list: those proven from the log to have completed before the period's end
        (omitted), and how many could not be proven either way this round. Claims
        proven to have completed at or after the end stay proven (a leaf never moves),
        so a busy district gets through its later claims ``MAX_OMITTED_CHECKS`` at a
        time, at most ``PROOF_BATCHES`` batches a round."""
        s = verified.statement
        later = self._after_end.setdefault((s.serial, s.revision), set())
        omitted: list[str] = []
        heads: dict[int, transparency.Head] = {}
        for _ in range(PROOF_BATCHES):
            # Claims a bureau decision excluded roll into the next period: not omitted.
            found = self._app.query(settlement.unsettled_candidates,
                                    [c.claim_id for c in listed] + list(s.sheet.excluded)
                                    + sorted(later) + omitted, self.proof_batch)
            unproven = 0
            for claim_id in found.claim_ids:
                if self._stop.is_set():
                    return omitted, unproven + 1
                try:
                    index = self._completed_at(verified.head, claim_id, heads)
                except (grpc.RpcError, transparency.LogError, DecodeError) as e:
                    unproven += 1
                    log.warning("could not prove from the log when a claim completed",
                                claim_id=claim_id, problem=str(e)[:300])
                    continue
                if index < s.end:
                    omitted.append(claim_id)
                else:
                    later.add(claim_id)
            if unproven or not found.more:
                return omitted, unproven
            if len(omitted) >= settlement.MAX_OMITTED_CHECKS:
                return omitted[:settlement.MAX_OMITTED_CHECKS], 0
        return omitted, 1  # more to prove: the next round goes on

    def _completed_at(self, cited: transparency.Head, claim_id: str,
                      heads: dict[int, transparency.Head]) -> int:
        """The log leaf that completed ``claim_id``, proven in a head the clearinghouse
        signed that extends the statement's cited (quorum-final) head."""
        proof: pb.GetInclusionProofResponse = self._conn.stub.GetInclusionProof(
            pb.GetInclusionProofRequest(claim_id=claim_id), timeout=CALL_TIMEOUT_SECONDS)
        head = heads.get(proof.head.size)
        if head is None:
            head = transparency.check_head(proof.head.note, self._conn.log_keys)
            if head.size < cited.size:
                raise transparency.LogError("the proof's head is older than the cited one")
            transparency.check_extends(cited, head,
                                       self._conn.consistency(cited.size, head.size))
            heads[head.size] = head
        transparency.check_included(proof.logged.entry, proof.logged.index, head,
                                    list(proof.logged.path))
        entry = pb.LogEntry.FromString(proof.logged.entry)
        if entry.claim_id != claim_id or entry.state != pb.CLAIM_STATE_COMPLETED:
            raise transparency.LogError(f"the log's latest leaf of claim {claim_id} does not "
                                        "complete it")
        return int(proof.logged.index)


def _bad_list(what: str) -> Refusal:
    return settlement.refuse("BAD_CLAIM_LIST", "清算中心列出的结算请求有误",
                             f"the clearinghouse's list of claims settled is wrong: {what}")


__all__ = ["LAG_GRACE_SECONDS", "SETTLEMENT_SECONDS", "Round", "Settler"]
