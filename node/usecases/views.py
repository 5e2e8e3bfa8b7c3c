"""What use-cases return: small immutable values, free of storage and protobuf."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from node.domain.access import Actor as Actor
from node.domain.ledger import Origin, StoredEntry
from node.domain.links import PersonLink
from node.storage.orders import OrderRecord


@dataclass(frozen=True, slots=True)
class ServicePointView:
    id: int
    code: str
    name: str
    street: str


@dataclass(frozen=True, slots=True)
class StaffView:
    id: int
    name: str
    service_point_id: int


@dataclass(frozen=True, slots=True)
class PersonView:
    id: int
    person_ref: str
    kind: str
    name: str
    priority: bool
    service_point_id: int
    age: int
    enrolled_at: datetime
    home_node_id: str = ""  # "": this node keeps the person's hours
    phone: str = ""
    changes: tuple[PersonChangeView, ...] = ()  # the latest, oldest first
    links: tuple[PersonLink, ...] = ()  # from this person's side, in the order made


@dataclass(frozen=True, slots=True)
class PersonChangeView:
    """One change of a person's record after enrolment: who, when, what."""

    at: datetime
    actor: str
    kind: str
    detail: str


@dataclass(frozen=True, slots=True)
class LinkView:
    person_id: int
    other_id: int
    relation: str


@dataclass(frozen=True, slots=True)
class OrderView:
    record: OrderRecord
    category_name: str
    notices: tuple[str, ...] = ()
    consent_id: int = 0  # paid here from a relative's hours under this consent (ADR 0017)


@dataclass(frozen=True, slots=True)
class PublicOrderView:
    """An order in its publicity period as the public sees it (社会监督): what was done,
    where, when and for how long, by people named only by their masked names. It holds
    no person id, full name, ID number or phone, so nothing built from it can leak one."""

    id: int
    category: str
    category_name: str
    service_point: str  # the recipient's service point's name ("" if none)
    minutes: int  # the service measured, to be recorded
    recipient: str  # masked
    volunteer: str  # masked
    served_at: datetime  # checked out
    public_until: datetime
    disputed: bool


@dataclass(frozen=True, slots=True)
class OpenRequestView:
    """A request waiting for a volunteer (志愿接单), as a volunteer choosing one to take
    sees it: what, where, for how long and what the requester wrote, with the recipient
    named only by their masked name. It holds no person id, full name, ID number or
    phone, so nothing built from it can leak one."""

    id: int
    category: str
    category_name: str
    planned_minutes: int
    service_point_id: int  # the recipient's service point (0: none)
    service_point: str  # its name ("" if none)
    recipient: str  # masked
    requested_at: datetime
    note: str  # what the requester wrote for the volunteer


@dataclass(frozen=True, slots=True)
class OriginBalance:
    origin: Origin
    total: int
    held: int


@dataclass(frozen=True, slots=True)
class BalanceView:
    person_id: int
    person_ref: str
    total: int
    held: int
    by_origin: tuple[OriginBalance, ...]
    cap: int

    @property
    def available(self) -> int:
        return self.total - self.held


@dataclass(frozen=True, slots=True)
class HistoryView:
    person_id: int
    entries: tuple[tuple[StoredEntry, int], ...]  # (entry, net effect on the person)


@dataclass(frozen=True, slots=True)
class LedgerReport:
    ok: bool
    transactions: int
    accounts: int
    head_hash: bytes
    problems: tuple[str, ...]
    issued: int
    granted: int
    held_by_people: int
    donation_pool: int
    consumed: int
    clearing: int
    #: Deliveries refused (what was relayed not signed by an admitted, unrevoked key of
    #: the district that must say it): how many, and the latest, one line each. They do
    #: not make the ledger wrong (nothing of them was applied), but the bureau should
    #: hear of each.
    refused_deliveries: int = 0
    refusals: tuple[str, ...] = ()
