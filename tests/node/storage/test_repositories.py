"""The node's repositories, one per aggregate, on SQLite and on PostgreSQL: what each
writes reads back as the same typed record (or, for claims, the same domain ``Claim``),
a change is made only from the state it was read in, and a stored row that breaks the
claim model is refused when it is loaded."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime, timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from node.domain import claims as model
from node.domain.claims import ACCEPT, ClaimState, Decision, Reason, new_claim_id
from node.domain.clock import ManualClock
from node.domain.ledger import (
    CITY_GRANT,
    DONATION_POOL,
    Account,
    Entry,
    EntryKind,
    HoldState,
    Origin,
    Posting,
)
from node.domain.orders import OrderState
from node.domain.policy import Relation
from node.storage.anchors import LoggedAnchor
from node.storage.city import CityEnvelopeRecord
from node.storage.messages import RefusedDeliveryRecord
from node.storage.orders import NewOrder, OrderEvent
from node.storage.people import NewPerson, PersonRecord
from node.storage.repo import Repo
from node.usecases.app import NodeApp
from runtime.errors import InvariantViolation, NotFound

OTHER = "320113"
_ids = iter(range(1, 10_000))


@contextmanager
def writing(app: NodeApp) -> Iterator[Repo]:
    with app.db.write() as conn:
        yield Repo(conn)


def _person(repo: Repo, at: datetime, home: str | None = None) -> PersonRecord:
    n = next(_ids)
    person_id = repo.people.add(NewPerson(
        person_ref=f"{n:064x}", kind="individual", name=f"王{n}", id_number=f"ID{n:016d}",
        phone="13800000000", birth_date=None, priority=False, service_point_id=None,
        enrolled_at=at, home_node_id=home))
    return repo.people.get(person_id)


def _order(repo: Repo, recipient: int, at: datetime, minutes: int = 60) -> int:
    return repo.orders.add(NewOrder(recipient_id=recipient, category="meals",
                                    planned_minutes=minutes, payment_source="own",
                                    payer_id=None, requested_by=f"person:{recipient}",
                                    note="", requested_at=at))


def _claim_id(app: NodeApp) -> str:
    app.clock.advance(timedelta(milliseconds=1))  # a manual clock: ids in order
    return new_claim_id(int(app.clock.now().timestamp() * 1000))


# ------------------------------------------------------------------ claims


def test_each_way_a_claim_opens_reads_back_as_the_same_claim(node_app: NodeApp) -> None:
    now = node_app.clock.now()
    until = now + timedelta(days=30)
    with writing(node_app) as repo:
        payer, served = _person(repo, now, OTHER), _person(repo, now)
        order_id = _order(repo, served.id, now)
        made = [
            model.redemption_proposed(_claim_id(node_app), OTHER, payer.person_ref,
                                      served.person_ref, 60, order_id, payer.id, now, until),
            model.redemption_decided(_claim_id(node_app), OTHER, payer.person_ref, "", 90,
                                     payer.id, ACCEPT, now, until),
            model.redemption_decided(_claim_id(node_app), OTHER, payer.person_ref,
                                     served.person_ref, 90, None,
                                     Decision(Reason.NOT_A_RELATIVE, "NOT_A_RELATIVE"), now,
                                     until),
            model.move_started(_claim_id(node_app), OTHER, served.person_ref,
                               [(Origin.INDIVIDUAL, 6_000_000 - 30), (Origin.GRANTED, 30)],
                               served.id, now, until),
            model.move_relayed(_claim_id(node_app), OTHER, payer.person_ref, 90,
                               [(Origin.DONATED, 90)], None, False, now, until),
        ]
        for claim in made:
            repo.claims.add(claim)
    with node_app.db.read() as conn:
        loaded = [Repo(conn).claims.get(c.claim_id) for c in made]
        assert Repo(conn).claims.get(_claim_id(node_app)) is None
    assert loaded == made
    assert loaded[3] is not None and loaded[3].origins == (
        (Origin.INDIVIDUAL, 6_000_000 - 30), (Origin.GRANTED, 30))


def test_a_claim_changes_only_from_the_state_it_was_read_in(node_app: NodeApp) -> None:
    now = node_app.clock.now()
    with writing(node_app) as repo:
        payer, served = _person(repo, now, OTHER), _person(repo, now)
        proposed = model.redemption_proposed(
            _claim_id(node_app), OTHER, payer.person_ref, served.person_ref, 60,
            _order(repo, served.id, now), payer.id, now, now + timedelta(days=30))
        repo.claims.add(proposed)
        accepted = model.accept(proposed, now + timedelta(minutes=1))
        repo.claims.update(proposed, accepted)
        repo.claims.update(accepted, accepted)  # nothing changed: nothing written
    finishing = model.finish(accepted, now + timedelta(minutes=2), 45)
    with pytest.raises(InvariantViolation, match="changed under a writer"), \
            writing(node_app) as repo:
        repo.claims.update(proposed, finishing)  # read PROPOSED; it is ACCEPTED by now
    with writing(node_app) as repo:
        assert repo.claims.get(proposed.claim_id) == accepted
        repo.claims.update(accepted, finishing)
        assert repo.claims.get(proposed.claim_id) == finishing
        with pytest.raises(InvariantViolation, match="cannot become"):
            repo.claims.update(finishing, replace(finishing, claim_id=_claim_id(node_app)))


def test_claims_are_listed_in_id_order_and_open_ones_counted(node_app: NodeApp) -> None:
    now = node_app.clock.now()
    until = now + timedelta(days=1)
    with writing(node_app) as repo:
        payer = _person(repo, now)
        other = _person(repo, now)
        held = model.redemption_decided(_claim_id(node_app), OTHER, payer.person_ref, "", 30,
                                        payer.id, ACCEPT, now, until)
        refused = model.redemption_decided(
            _claim_id(node_app), OTHER, payer.person_ref, "", 30, payer.id,
            Decision(Reason.INSUFFICIENT_BALANCE, "0 min available"), now, until)
        moving = model.move_started(_claim_id(node_app), OTHER, other.person_ref,
                                    [(Origin.INDIVIDUAL, 60)], other.id, now, until)
        for claim in (held, refused, moving):
            repo.claims.add(claim)
        done = model.complete(moving, now, 60)
        repo.claims.update(moving, done)
    with node_app.db.read() as conn:
        claims = Repo(conn).claims
        assert claims.list(None, "", 10) == [held, refused, done]
        assert claims.list(None, held.claim_id, 1) == [refused]
        assert claims.list(ClaimState.ACCEPTED, "", 10) == [held]
        assert claims.list(ClaimState.FINISHING, "", 10) == []
        assert claims.open_count() == 1
        assert (claims.open_count_of(payer.person_ref), claims.open_count_of(other.person_ref)
                ) == (1, 0)


@pytest.mark.parametrize(("column", "value", "message"), [
    ("state", "finishing", "debtor's claim is never finishing"),
    ("state", "lost", "stored malformed"),
    ("origins", "[[\"individual\", 10]]", "origins"),
    ("reason", "", "rejected with reason ''"),
    ("posted_minutes", 5, "rejected with 5 min to post"),
])
def test_a_stored_claim_that_breaks_the_model_is_refused_on_load(
        node_app: NodeApp, column: str, value: object, message: str) -> None:
    now = node_app.clock.now()
    with writing(node_app) as repo:
        payer = _person(repo, now)
        claim = model.redemption_decided(_claim_id(node_app), OTHER, payer.person_ref, "", 30,
                                         payer.id, Decision(Reason.POLICY, "TOO_YOUNG"), now,
                                         now + timedelta(days=1))
        repo.claims.add(claim)
    with writing(node_app) as repo:
        repo.conn.execute(text(f"UPDATE claims SET {column} = :v"), {"v": value})
    with pytest.raises(InvariantViolation, match=message), node_app.db.read() as conn:
        Repo(conn).claims.get(claim.claim_id)


# ------------------------------------------------------------------ holds


def test_holds_reserve_and_give_back_minutes(node_app: NodeApp) -> None:
    now = node_app.clock.now()
    with writing(node_app) as repo:
        person = _person(repo, now)
        account = Account.of_person(person.person_ref, Origin.INDIVIDUAL)
        pool = repo.ledger.ensure_account(DONATION_POOL)
        record = repo.ledger.ensure_account(account, person.id)
        claim = model.redemption_decided(_claim_id(node_app), OTHER, person.person_ref, "",
                                         30, person.id, ACCEPT, now, now + timedelta(days=1))
        repo.claims.add(claim)
        # a source may go below zero by what its caller allows; a person's account never
        repo.holds.hold_for_order(_order(repo, person.id, now), pool.id, 20, -20, now)
    with pytest.raises(InvariantViolation, match="exceeds what is available"), \
            writing(node_app) as repo:
        repo.holds.hold_for_claim(claim.claim_id, record.id, 30, now)
    with writing(node_app) as repo:
        repo.ledger.append(_gift(person, now), {person.person_ref: person.id})
        repo.holds.hold_for_claim(claim.claim_id, record.id, 25, now)
        repo.holds.hold_for_claim(claim.claim_id, record.id, 5, now)
        holds = repo.holds.of_claim(claim.claim_id)
        assert [(h.minutes, h.state) for h in holds] == [(25, HoldState.ACTIVE),
                                                         (5, HoldState.ACTIVE)]
        assert repo.ledger.accounts_by_ids([record.id])[record.id].available == 0
        repo.claims.update(claim, model.expire(claim, now))
        assert repo.holds.of_final_claims() == 2  # both its holds, until released
        repo.holds.close(holds, HoldState.RELEASED, now)
        assert repo.holds.of_claim(claim.claim_id) == []
        assert repo.holds.of_final_claims() == 0
        assert repo.ledger.accounts_by_ids([record.id])[record.id].available == 30
        assert repo.holds.active_sums() == {pool.id: 20}
        with pytest.raises(InvariantViolation, match="only active holds"):
            repo.holds.close([replace(holds[0], state=HoldState.POSTED)], HoldState.POSTED,
                             now)
        with pytest.raises(InvariantViolation, match="posted or released"):
            repo.holds.close(holds, HoldState.ACTIVE, now)


def _gift(person: PersonRecord, at: datetime) -> Entry:
    account = Account.of_person(person.person_ref, Origin.INDIVIDUAL)
    return Entry(EntryKind.GRANT, (Posting(CITY_GRANT, -30), Posting(account, 30)), at)


# ------------------------------------------------------------------ orders and people


def test_an_order_is_written_as_changed_and_from_the_state_read(node_app: NodeApp,
                                                                clock: ManualClock) -> None:
    now = clock.now()
    with writing(node_app) as repo:
        recipient = _person(repo, now)
        first = repo.orders.get(_order(repo, recipient.id, now))
        second = repo.orders.get(_order(repo, recipient.id, now, 30))
        assert (first.state, first.held_minutes, first.rating, first.claim_id) == (
            OrderState.REQUESTED, 0, 0, None)
        accepted = replace(first, state=OrderState.ACCEPTED.value, held_minutes=60,
                           accepted_at=now)
        repo.orders.update(first, accepted)
        repo.orders.add_event(OrderEvent(first.id, now, first.state, accepted.state, "node"))
        cancelled = [(o, replace(o, state=OrderState.CANCELLED.value, cancelled_at=now))
                     for o in (accepted, second)]
        repo.orders.update_all(cancelled)  # two from-states, one batch of columns
        repo.orders.add_events([OrderEvent(o.id, now, o.state, "cancelled", "staff:1", "x")
                                for o, _ in cancelled])
    with pytest.raises(InvariantViolation, match="changed under a writer"), \
            writing(node_app) as repo:
        repo.orders.update(first, replace(first, note="late"))
    with node_app.db.read() as conn:
        orders = Repo(conn).orders
        assert orders.by_ids([first.id, second.id]) == [after for _, after in cancelled]
        assert orders.list(recipient.id, OrderState.CANCELLED, 0, 10) == [
            after for _, after in cancelled]
        assert orders.list(0, OrderState.REQUESTED, 0, 10) == []
        assert [(e.from_state, e.to_state) for e in orders.events(first.id)] == [
            ("requested", "accepted"), ("accepted", "cancelled")]
        with pytest.raises(NotFound):
            orders.get(10**9)


def test_people_and_their_links(node_app: NodeApp) -> None:
    now = node_app.clock.now()
    with writing(node_app) as repo:
        mother, son = _person(repo, now), _person(repo, now, OTHER)
        repo.people.add_link(mother.id, son.id, Relation.CHILD, None, now)
        repo.people.add_link(mother.id, son.id, Relation.PROXY, None, now)
        repo.people.set_home(son.id, None)
    with node_app.db.read() as conn:
        people = Repo(conn).people
        assert people.relations(mother.id, son.id) == {Relation.CHILD, Relation.PROXY}
        assert people.relations(son.id, mother.id) == set()
        assert people.by_ref(son.person_ref) == replace(son, home_node_id=None)
        assert people.by_id_number(mother.id_number) == mother
        assert people.by_ids([mother.id, son.id])[mother.id] == mother
        assert people.by_ref("0" * 64) is None
        with pytest.raises(NotFound, match="no person"):
            people.get(10**9)


# ------------------------------------------------------------------ messages, anchors, the rest


def test_a_claims_messages_leave_the_outbox_in_order(node_app: NodeApp) -> None:
    now = node_app.clock.now()
    with writing(node_app) as repo:
        first = repo.outbox.enqueue("claim.propose", "c-1", b"one", now)
        repo.outbox.enqueue("claim.finish", "c-1", b"two", now)
        other = repo.outbox.enqueue("directory.register", None, b"three", now)
        assert [m.id for m in repo.outbox.due(now, 10)] == [first, other]
        assert repo.outbox.done(first, "receipt", "ACCEPTED", now)
        assert not repo.outbox.done(first, "receipt", "ACCEPTED", now)  # once
        repo.outbox.retry(other, now + timedelta(seconds=1), "x" * 600)
        due = repo.outbox.due(now, 10)
        assert [(m.kind, m.envelope) for m in due] == [("claim.finish", b"two")]
        later = repo.outbox.get(other)
        assert (later.attempts, len(later.detail), later.done_at) == (1, 500, None)
        assert repo.outbox.pending() == 2
        assert repo.inbox.last_seq() == 0
        repo.inbox.add(1, "expiry", "c-1", now)
        assert repo.inbox.last_seq() == 1


def test_an_anchor_is_logged_once(node_app: NodeApp) -> None:
    now = node_app.clock.now()
    with writing(node_app) as repo:
        repo.anchors.add(3, b"h" * 32, b"r" * 32, b"body", now)
        assert repo.anchors.latest() is None  # queued, not yet in the log
        [found] = repo.anchors.at(3)
        assert (found.key_id, found.checkpoint, found.log_index) == ("", b"body", None)
        repo.anchors.set_anchored(3, "a" * 16, b"signed", 41, b"leaf", b"p" * 64, "head", now)
        repo.anchors.set_anchored(3, "a" * 16, b"again", 42, b"leaf", b"", "head", now)
        latest = repo.anchors.latest()
        assert [a.key_id for a in repo.anchors.at(3)] == ["a" * 16]
    assert isinstance(latest, LoggedAnchor)
    assert (latest.entry_count, latest.key_id, latest.checkpoint, latest.log_index,
            latest.log_proof) == (3, "a" * 16, b"signed", 41, b"p" * 64)


def test_the_same_count_is_anchored_once_per_key(node_app: NodeApp) -> None:
    now = node_app.clock.now()
    later = now + timedelta(minutes=1)
    with writing(node_app) as repo:
        repo.anchors.add(3, b"h" * 32, b"r" * 32, b"body", now)
        repo.anchors.set_anchored(3, "a" * 16, b"old key", 41, b"leaf", b"", "head", now)
        repo.anchors.add(3, b"h" * 32, b"r" * 32, b"body again", later)  # after a rotation
        assert [a.key_id for a in repo.anchors.at(3)] == ["a" * 16, ""]
        repo.anchors.set_anchored(3, "b" * 16, b"new key", 57, b"leaf", b"", "head", later)
        assert [a.key_id for a in repo.anchors.at(3)] == ["a" * 16, "b" * 16]
        latest = repo.anchors.latest()
        assert latest is not None and (latest.key_id, latest.log_index) == ("b" * 16, 57)
        # a checkpoint the clearinghouse refused no longer waits; one logged stays
        repo.anchors.add(4, b"i" * 32, b"s" * 32, b"refused", later)
        repo.anchors.drop_waiting(4)
        repo.anchors.drop_waiting(3)
        assert repo.anchors.at(4) == [] and len(repo.anchors.at(3)) == 2


def test_city_envelopes_are_kept_once_each(node_app: NodeApp) -> None:
    now = node_app.clock.now()
    with writing(node_app) as repo:
        assert repo.city.all() == [] and repo.city.count() == 0
        cert = CityEnvelopeRecord(b"d" * 32, "admission", "320106", b"certificate")
        roster = CityEnvelopeRecord(b"e" * 32, "roster", "", b"roster")
        repo.city.add(roster, now)
        repo.city.add(cert, now)
        assert repo.city.all() == [cert, roster]
        assert repo.city.digests() == {b"d" * 32, b"e" * 32}
        with pytest.raises(IntegrityError), repo.conn.begin_nested():  # once each
            repo.city.add(cert, now)
        with pytest.raises(IntegrityError), repo.conn.begin_nested():  # the city's kinds
            repo.city.add(CityEnvelopeRecord(b"f" * 32, "receipt", "", b"x"), now)
        assert repo.city.count() == 2


def test_a_refused_delivery_is_in_the_inbox_with_why(node_app: NodeApp) -> None:
    now = node_app.clock.now()
    with writing(node_app) as repo:
        repo.inbox.add(1, "claim.propose", "c-1", now)
        for seq in (2, 3):
            repo.inbox.refuse(RefusedDeliveryRecord(
                seq, "claim.propose", "320106", "ab" * 8, f"c-{seq}", "BAD_SIGNATURE",
                "x" * 900, now))
        assert repo.inbox.last_seq() == 3
        assert repo.inbox.refused_count() == 2
        newest = repo.inbox.refused(1)
        assert [r.seq for r in newest] == [3]
        assert (newest[0].reason, len(newest[0].detail)) == ("BAD_SIGNATURE", 500)


def test_meta_staff_and_idempotency(node_app: NodeApp) -> None:
    now = node_app.clock.now()
    with writing(node_app) as repo:
        assert repo.meta.get("node_id") == "320115"
        repo.meta.set("log.verified_head", "one")
        repo.meta.set("log.verified_head", "two")
        assert repo.meta.get("log.verified_head") == "two"
        point = repo.staff.add_service_point("SP-9", "东山街道服务站", "东山街道", now)
        member = repo.staff.add("王芳", point, now)
        found = repo.staff.get(member)
        assert found is not None and (found.name, found.service_point_id) == ("王芳", point)
        by_code = repo.staff.service_point_by_code("SP-9")
        assert by_code is not None and by_code == repo.staff.service_point(point)
        assert repo.staff.get(10**9) is None
        repo.idempotency.save("k", "Enrol", b"f" * 32, b"response", now)
        stored = repo.idempotency.get("k")
        assert stored is not None and (stored.method, stored.response) == ("Enrol", b"response")
        assert repo.idempotency.get("other") is None
