"""The repositories of one transaction: every SQL statement the node runs, by aggregate.

``Repo(conn)`` gives a use-case one repository per aggregate over its transaction's
connection: ``meta``, ``staff``, ``people``, ``ledger``, ``holds``, ``orders``,
``claims``, ``consents``, ``outbox``, ``inbox``, ``anchors``, ``policies``, ``city`` (the
city's acts as verified here), ``idempotency``, ``logins`` (accounts and credentials),
``settlements`` (settlement statements seen, and the claims they settled) and
``passbooks`` (the passbook files issued, by the digest their node signed), each in the
module of that name (``outbox`` and ``inbox`` in ``messages``). Each takes and returns
typed records (or, for claims, the domain's ``Claim``).
"""

from __future__ import annotations

from sqlalchemy import Connection

from node.storage.anchors import AnchorRepo
from node.storage.city import CityEnvelopeRepo
from node.storage.claims import ClaimRepo
from node.storage.consents import ConsentRepo
from node.storage.holds import HoldRepo
from node.storage.idempotency import IdempotencyRepo
from node.storage.ledger import LedgerRepo
from node.storage.logins import LoginRepo
from node.storage.messages import InboxRepo, OutboxRepo
from node.storage.meta import MetaRepo
from node.storage.orders import OrderRepo
from node.storage.passbooks import PassbookRepo
from node.storage.people import PeopleRepo
from node.storage.policies import PolicyRepo
from node.storage.settlements import SettlementRepo
from node.storage.staff import StaffRepo

__all__ = ["Repo"]


class Repo:
    """All reads and writes of one transaction, one repository per aggregate."""

    __slots__ = ("anchors", "city", "claims", "conn", "consents", "holds", "idempotency",
                 "inbox", "ledger", "logins", "meta", "orders", "outbox", "passbooks", "people",
                 "policies", "settlements", "staff")

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.meta = MetaRepo(conn)
        self.staff = StaffRepo(conn)
        self.people = PeopleRepo(conn)
        self.ledger = LedgerRepo(conn)
        self.holds = HoldRepo(conn)
        self.orders = OrderRepo(conn)
        self.claims = ClaimRepo(conn)
        self.consents = ConsentRepo(conn)
        self.outbox = OutboxRepo(conn)
        self.inbox = InboxRepo(conn)
        self.anchors = AnchorRepo(conn)
        self.policies = PolicyRepo(conn)
        self.city = CityEnvelopeRepo(conn)
        self.idempotency = IdempotencyRepo(conn)
        self.logins = LoginRepo(conn)
        self.settlements = SettlementRepo(conn)
        self.passbooks = PassbookRepo(conn)

