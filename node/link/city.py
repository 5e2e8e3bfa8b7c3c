"""The city's admissions as this node verified them, kept for the link (issue 14).

``CityView`` holds what the city's acts stored on this node say
(``node.usecases.admissions.view``) and refreshes them from the clearinghouse: it asks
for them (GetAdmissions), checks every one under the city key in the node's own
configuration, stores those that pass and logs and counts those that do not (a
clearinghouse that serves them is lying about the city). The subscriber checks each
relayed envelope against a view at most ``FRESH_SECONDS`` old, so that a revocation the
clearinghouse serves takes effect within that time, and refreshes it once more when a
signer's key is not in it. The view is also refreshed on a schedule (for the checks
before a move or a redemption) and on demand (a move to a district the node has not
heard of yet).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import structlog

from node import metrics
from node.link.connection import Connection, all_admissions
from node.link.verified_log import ReceiptError
from node.usecases import admissions
from node.usecases.app import NodeApp
from timebank import roster
from timebank.admissions import (
    MAX_ACTS,
    ROSTER,
    AdmissionsError,
    CityAct,
    CityAdmissions,
    chain_of,
    verify_act,
)
from timebank.citykeys import CityKeys, KeyChainError

log = structlog.get_logger("node.clearing")

#: How often the node asks for the city's acts when nothing prompts it.
ADMISSIONS_SECONDS = 60.0
#: The oldest view a relayed envelope is checked against: a batch of deliveries after a
#: longer quiet asks for the city's acts first (one call for the whole batch).
FRESH_SECONDS = 5.0


class CityView:
    """The verified view and how it is refreshed; ``run`` refreshes it every ``interval``
    seconds (at once first) until ``stop``."""

    def __init__(self, app: NodeApp, connection: Connection, stop: threading.Event, *,
                 interval: float = ADMISSIONS_SECONDS) -> None:
        if interval <= 0:
            raise ValueError("the admissions' interval must be positive")
        if not app.node.city_key:
            raise ValueError("a node linked to a clearinghouse needs the city's public key "
                             "([city] public_key) to check what it relays")
        self._app = app
        self._conn = connection
        self._stop = stop
        self.interval = interval
        self._lock = threading.Lock()
        self._view: CityAdmissions | None = None
        #: The rosters of ``_view``, verified once for that view (witness and watch).
        self._rosters: tuple[CityAdmissions, dict[bytes, roster.Roster]] | None = None
        self._refreshed_at: float | None = None  # time.monotonic() of the last refresh
        self.refreshes = 0  # how many times the clearinghouse was asked
        self._follow_clearinghouse_key(self.current())

    def current(self) -> CityAdmissions:
        """The view (read from the database the first time)."""
        with self._lock:
            if self._view is None:
                self._view = self._app.query(admissions.view)
            return self._view

    def rosters(self, named: bytes | None = None) -> dict[bytes, roster.Roster]:
        """The city-signed rosters this node holds, by digest, each verified once per
        change of the view; asked for again first if ``named`` (the digest a tree head
        names) is not among them (a roster the city signed since)."""
        found = self._rosters_of(self.current())
        if named is not None and named not in found:
            self.refresh()
            found = self._rosters_of(self.current())
        return found

    def _rosters_of(self, view: CityAdmissions) -> dict[bytes, roster.Roster]:
        with self._lock:
            cached = self._rosters
        if cached is not None and cached[0] is view:
            return cached[1]
        found = roster.verified(view.envelopes(ROSTER), self._chain(view))
        with self._lock:
            self._rosters = (view, found)
        return found

    def _chain(self, view: CityAdmissions, more: Sequence[bytes] = (),
               clearinghouse: bytes | None = None) -> CityKeys:
        return chain_of(self._app.node.city_key, [*(a.envelope for a in view), *more],
                        clearinghouse)

    def _follow_clearinghouse_key(self, view: CityAdmissions) -> None:
        """Trust the clearinghouse keys the city's rotations in ``view`` name (ADR 0018)."""
        ring = self._conn.ring
        if ring is None:
            return
        try:
            keys = self._chain(view, clearinghouse=self._conn.clearinghouse_key).log_keys()
        except KeyChainError:
            return
        if ring.update(keys):
            log.info("the city rotated the clearinghouse's key",
                     keys=len(keys.keys), from_size=keys.changes[-1][0])

    def keys(self, clearinghouse: bytes | None = None) -> CityKeys:
        """The chain of the city's keys from the node's configured city key through the
        rotations it holds (ADR 0018): what every city act, and (given the configured
        clearinghouse key) every tree head, is checked under."""
        return self._chain(self.current(), clearinghouse=clearinghouse)

    def fresh(self, max_age: float = FRESH_SECONDS) -> CityAdmissions:
        """The view, refreshed first unless that was done within ``max_age`` seconds."""
        with self._lock:
            at = self._refreshed_at
        if at is None or time.monotonic() - at > max_age:
            self.refresh()
        return self.current()

    def refresh(self) -> int:
        """Ask the clearinghouse for the city's acts, store those the city signed; return
        how many were new. Acts stored before stay whatever it answers."""
        asked = time.monotonic()
        self.refreshes += 1
        found = all_admissions(self._conn.stub)
        offered = [*found.certificates, *found.revocations, *found.rosters, *found.policies,
                   *found.key_acts]
        if len(offered) > MAX_ACTS:
            raise ReceiptError(f"the clearinghouse offered {len(offered)} acts of the city; "
                               f"a node keeps at most {MAX_ACTS}")
        acts: list[CityAct] = []
        refused: list[str] = []
        try:
            keys = self._chain(self.current(), found.key_acts)
        except KeyChainError as e:  # two rotations with one serial: keep the chain held
            refused.append(e.message)
            keys = self.keys()
        for envelope in offered:
            try:
                acts.append(verify_act(envelope, keys))
            except AdmissionsError as e:
                refused.append(str(e))
        if refused:
            metrics.CITY_ACTS_REFUSED.inc(len(refused))
            log.error("the clearinghouse served envelopes as the city's that the city key "
                      "does not verify; they are ignored", count=len(refused),
                      first=refused[0][:200])
        known = self.current().digests
        unseen = [a for a in acts if a.digest not in known]
        new = self._app.execute(admissions.record, unseen) if unseen else 0
        view = self._app.query(admissions.view) if new else self.current()
        with self._lock:
            self._view = view
            self._refreshed_at = asked
        self._follow_clearinghouse_key(view)
        if new:
            log.info("the city's admissions changed", new_acts=new, acts=len(view))
        return new

    def run(self) -> None:
        self.refresh()
        while not self._stop.wait(self.interval):
            self.refresh()
