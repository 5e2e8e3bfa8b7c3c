"""The node's tables as SQLAlchemy Core handles, and the one way a row becomes a record.

The repositories (one module per aggregate: ``people``, ``ledger``, ``holds``,
``orders``, ``claims``, ``messages``, ``anchors``, ``idempotency``, ``meta``) write
Core statements over these handles; ``schema`` describes the tables themselves.
"""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Callable
from typing import Any, TypeVar, cast

from sqlalchemy import Table

from node.storage import schema as s

T = TypeVar("T")

ACCOUNTS = cast(Table, s.LedgerAccount.__table__)
ENTRIES = cast(Table, s.LedgerEntry.__table__)
POSTINGS = cast(Table, s.LedgerPosting.__table__)
HEAD = cast(Table, s.LedgerHead.__table__)
HOLDS = cast(Table, s.Hold.__table__)
ORDERS = cast(Table, s.Order.__table__)
EVENTS = cast(Table, s.OrderEvent.__table__)
PEOPLE = cast(Table, s.Person.__table__)
LINKS = cast(Table, s.PersonLink.__table__)
PERSON_EVENTS = cast(Table, s.PersonEvent.__table__)
POINTS = cast(Table, s.ServicePoint.__table__)
STAFF = cast(Table, s.StaffMember.__table__)
CLAIMS = cast(Table, s.ClaimRow.__table__)
OUTBOX = cast(Table, s.OutboxMessage.__table__)
INBOX = cast(Table, s.InboxDelivery.__table__)
ANCHORS = cast(Table, s.LogAnchor.__table__)
POLICIES = cast(Table, s.CityPolicyRow.__table__)
CONSENTS = cast(Table, s.ConsentRow.__table__)
CONSENT_USES = cast(Table, s.ConsentUse.__table__)
REFUSED = cast(Table, s.RefusedDelivery.__table__)
CITY_ENVELOPES = cast(Table, s.CityEnvelope.__table__)
IDEM = cast(Table, s.IdempotencyRecord.__table__)
META = cast(Table, s.Meta.__table__)
LOGINS = cast(Table, s.LoginAccount.__table__)
CREDENTIALS = cast(Table, s.Credential.__table__)
SETTLEMENTS = cast(Table, s.SettlementRow.__table__)
PASSBOOKS = cast(Table, s.IssuedPassbook.__table__)


def record(cls: type[T], row: Any) -> T:
    """The record ``cls`` whose fields are the row's columns (Core or prepared rows)."""
    return cls(**row._mapping)


_Fields = tuple[tuple[str, ...], Callable[[Any], tuple[Any, ...]]]
_FIELDS: dict[type, _Fields] = {}


def _fields(cls: type) -> _Fields:
    """A record type's field names and one getter of them all (made once per type)."""
    found = _FIELDS.get(cls)
    if found is None:
        names = tuple(f.name for f in dataclasses.fields(cls))
        found = _FIELDS[cls] = (names, operator.attrgetter(*names))
    return found


def values(rec: Any) -> dict[str, Any]:
    """A flat record's fields as column values (``dataclasses.asdict`` without its copies)."""
    names, get = _fields(type(rec))
    return dict(zip(names, get(rec), strict=True))


def changed(before: Any, after: Any) -> list[str]:
    """The fields in which two records of one type differ, in field order."""
    assert type(before) is type(after)
    names, get = _fields(type(before))
    return [n for n, old, new in zip(names, get(before), get(after), strict=True) if old != new]
