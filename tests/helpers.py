"""Small builders for tests: real ID numbers, people, and orders walked through the loop."""

from __future__ import annotations

import itertools
from datetime import timedelta

from node.domain.clock import ManualClock
from node.domain.identity import credit_code_with_check, id_card_with_check_digit
from node.domain.orders import PaymentSource, PersonKind
from node.usecases import orders, people
from node.usecases.app import NodeApp
from node.usecases.views import Actor, OrderView, PersonView

_serial = itertools.count(1)


def id_card(birth_year: int, district: str = "320115") -> str:
    """A valid ID card number born on 1 January of the year, unique per call."""
    return id_card_with_check_digit(f"{district}{birth_year:04d}0101{next(_serial) % 1000:03d}")


def credit_code() -> str:
    return credit_code_with_check(f"91320115MA{next(_serial):07d}")


def enrol(app: NodeApp, name: str, birth_year: int = 1960, *, priority: bool = False,
          group: bool = False) -> PersonView:
    if group:
        return app.execute(people.enrol_person, PersonKind.GROUP, name, credit_code(), "",
                           False, 0)
    return app.execute(people.enrol_person, PersonKind.INDIVIDUAL, name, id_card(birth_year),
                       "13800000000", priority, 0)


def serve(app: NodeApp, clock: ManualClock, recipient: int, volunteer: int, minutes: int = 60,
          *, source: PaymentSource = PaymentSource.CITY_GRANT, payer: int = 0,
          category: str = "cleaning", record: bool = True) -> OrderView:
    """Walk one order from request to recorded (or to verified with record=False)."""
    requester = Actor(person_id=payer or recipient)
    o = app.execute(orders.request_order, recipient, category, minutes, source, payer,
                    requester, "")
    app.execute(orders.accept_order, o.record.id, volunteer)
    app.execute(orders.check_in, o.record.id)
    clock.advance(timedelta(minutes=minutes))
    app.execute(orders.check_out, o.record.id)
    o = app.execute(orders.verify_order, o.record.id, Actor(person_id=recipient), 5, "")
    if record:
        clock.advance(timedelta(days=app.policy.publicity_days))
        o = app.execute(orders.record_order, o.record.id)
    return o
