"""Who may follow a claim at the desk (GetClaim): staff only as far as they may its
people here; operators and auditors any (``may_call`` decides those)."""

from __future__ import annotations

import pytest

from node.domain.access import Principal, Role
from node.usecases import access, claims, ledger, people
from node.usecases.app import NodeApp
from runtime.errors import PermissionDenied
from tests.helpers import enrol, staff
from timebank.minutes import hours


def _staff_at(point: int) -> Principal:
    return Principal(Role.STAFF, account_id=7, staff_id=3, service_point_id=point)


def test_staff_follow_only_their_own_peoples_claims(node_app: NodeApp) -> None:
    here = node_app.execute(people.register_service_point, "SP-1", "东山站", "东山街道").id
    there = node_app.execute(people.register_service_point, "SP-2", "麒麟站", "麒麟街道").id
    elder = enrol(node_app, "孙秀兰", 1936, priority=True, point=here).id
    node_app.execute(ledger.grant, elder, hours(2), staff(node_app), "")
    moved = node_app.execute(claims.start_move, elder, "320113")  # a claim of hers

    def follow(who: Principal) -> None:
        view = node_app.query(claims.get_claim, moved.claim_id)
        node_app.query(lambda tx: access.require_claim(tx, who, 0, view.person_id))

    follow(_staff_at(here))
    follow(Principal(Role.OPERATOR, account_id=1))
    with pytest.raises(PermissionDenied):
        follow(_staff_at(there))
    with pytest.raises(PermissionDenied):  # a claim naming no one here: the operator's
        node_app.query(lambda tx: access.require_claim(tx, _staff_at(here), 0, 0))
