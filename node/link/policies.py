"""The policy fetcher: this node learns the city-signed policies from the clearinghouse.

At once and then every ``interval`` seconds it reads the city's ``policy`` acts through
the city view (``node.link.city``, the node's one reader of ``GetAdmissions``, which it
asks to refresh) and checks each with the contract's reader under the city public key
this node was configured with. The clearinghouse only carries
them: an act it made up, or changed, fails the city's signature and is never run. What
passes is stored, and the app's policy book is replaced, so every transaction from then
on runs the policy in force at its own time (``node.usecases.policies``).

A serial the node already holds with another text is not taken (the first stays) and is
logged as an error: the city never signs two policies with one serial.
"""

from __future__ import annotations

import threading

import structlog

from node.link.city import CityView
from node.usecases import policies
from node.usecases.app import NodeApp
from timebank import citypolicy
from timebank.admissions import POLICY
from timebank.citypolicy import CityPolicy, PolicyActError
from timebank.policy import short_digest

log = structlog.get_logger("node.clearing")

#: How often the node looks for a new city policy. A policy is issued ahead of its
#: effective time or takes effect "now"; the clearinghouse's grace around a change
#: (``timebank.citypolicy.GRACE``, minutes) is far longer.
POLICY_SECONDS = 5.0
#: The most policy acts one answer may carry.
MAX_POLICIES = 10_000


class PolicyFetcher:
    def __init__(self, app: NodeApp, city: CityView, city_public_key: bytes,
                 stop: threading.Event, *, interval: float = POLICY_SECONDS) -> None:
        if interval <= 0:
            raise ValueError("the policy fetcher's interval must be positive")
        self._app = app
        self._city = city
        self._city_key = city_public_key
        self._stop = stop
        self.interval = interval

    def run(self) -> None:
        self.fetch_once()
        while not self._stop.wait(self.interval):
            self.fetch_once()

    def fetch_once(self) -> int:
        """Fetch, verify and store the city's policies; return how many were new."""
        self._city.refresh()
        held = self._city.current().envelopes(POLICY)
        acts: list[CityPolicy] = []
        for raw in held[:MAX_POLICIES]:
            try:
                acts.append(citypolicy.read_city_policy(policies.envelope_of(raw),
                                                        self._city.keys()))
            except PolicyActError as e:
                log.error("a city policy from the clearinghouse does not verify under the "
                          "city key; it is not run", reason=e.reason, detail=e.message)
        known = {p.serial: p.sha256 for p in self._app.policies.city}
        for act in acts:
            if known.get(act.serial, act.sha256) != act.sha256:
                log.error("the clearinghouse gave another city policy for a serial this node "
                          "holds; the one held stays", serial=act.serial)
        new = [act for act in acts if act.serial not in known]
        if not new:
            return 0
        done = self._app.execute(policies.store, new)
        for serial in done.conflicts:
            log.error("the clearinghouse gave another city policy for a serial this node "
                      "holds; the one held stays", serial=serial)
        stored = self._app.query(policies.stored)
        book = self._app.policies.with_city(policies.verified(stored, self._city.keys()))
        self._app.set_city_policies(book)
        for act in done.added:
            log.info("city policy received", serial=act.serial,
                     sha256=short_digest(act.sha256),
                     effective_at=act.effective_at.isoformat())
        return len(done.added)
