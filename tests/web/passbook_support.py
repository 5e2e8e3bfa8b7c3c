"""A district whose ledger is anchored in a real city's log, served for the console's
passbook tests: the in-process city of tests/federation (a clearinghouse gRPC server and
three nodes with their links), 江宁区's node served on 127.0.0.1 with its link, a
volunteer who earned hours there, and the accounts that log in to the console.

A passbook needs what ``tests/web/conftest.py``'s ``town`` has not: a checkpoint of the
ledger in the city's log, and a head cosigned by a quorum of districts."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from node.api.server import start_server
from node.domain.access import Role
from node.domain.orders import PersonKind
from node.usecases import logins, people
from tests.federation.conftest import CH_KEY, CITY_ROOT, City, make_city
from tests.federation.support import JN, enrol_at
from tests.federation.test_statement import anchor_and_cosign
from tests.helpers import earn, enrol, id_card
from tests.web.conftest import PASSWORD
from timebank.keys import public_key

ROOT_PUB, CH_PUB = public_key(CITY_ROOT), public_key(CH_KEY)


@dataclass(frozen=True)
class Anchored:
    city: City
    address: str  # 江宁区's node
    volunteer: int  # 刘洋, at the service point, earned 135 minutes
    member_login: str  # 刘洋's own account
    stranger_login: str  # another member of the district (孙强)
    staff_login: str  # staff at 刘洋's service point
    other_point_login: str  # staff of another service point
    elder: int  # 孙奶奶, whom 刘洋 serves


def serve_and_anchor_again(district: Anchored, minutes: int = 30) -> None:
    """An hour later 刘洋 serves again and the ledger is anchored and cosigned again: a
    passbook made now cites another anchor and head, so it has another code."""
    city = district.city
    city.clock.advance(timedelta(hours=1))
    earn(city[JN].app, city.clock, district.volunteer, minutes, district.elder)
    city.settle()
    anchor_and_cosign(city, JN)


def _account(city: City, login: str, role: Role, *, staff_id: int = 0,
             person_id: int = 0) -> str:
    app = city[JN].app
    app.execute(logins.add_account, login, role, staff_id=staff_id, person_id=person_id)
    app.execute(logins.set_password, login, PASSWORD)
    return login


@contextmanager
def anchored_district(tmp: Path) -> Iterator[Anchored]:
    for city in make_city(tmp, f"sqlite:///{tmp / 'ch.sqlite3'}"):
        app = city[JN].app
        point = app.execute(people.register_service_point, "SP-PB", "东山服务点", "东山街道")
        far = app.execute(people.register_service_point, "SP-FAR", "麒麟服务点", "麒麟街道")
        desk = app.execute(people.register_staff, "王主任", point.id).id
        far_desk = app.execute(people.register_staff, "赵站长", far.id).id
        volunteer = app.execute(people.enrol_person, PersonKind.INDIVIDUAL, "刘洋",
                                id_card(1958), "13800000000", False, point.id).id
        stranger = enrol_at(city, JN, "孙强", id_card(1970))
        elder = enrol(app, "孙奶奶", 1936, priority=True, point=point.id).id
        earn(app, city.clock, volunteer, 90, elder)
        earn(app, city.clock, volunteer, 45, elder)
        city.settle()
        anchor_and_cosign(city, JN)
        running = start_server(app, "127.0.0.1:0", link=city[JN].link)
        try:
            yield Anchored(
                city, f"127.0.0.1:{running.port}", volunteer,
                _account(city, "liu.yang", Role.MEMBER, person_id=volunteer),
                _account(city, "sun.qiang", Role.MEMBER, person_id=stranger),
                _account(city, "wang.desk", Role.STAFF, staff_id=desk),
                _account(city, "zhao.far", Role.STAFF, staff_id=far_desk), elder)
        finally:
            running.stop(None)


def verify_cli(path: Path) -> subprocess.CompletedProcess[str]:
    """`timebank verify-statement FILE` with the city's two public keys, as a process."""
    return subprocess.run(
        [sys.executable, "-m", "city", "verify-statement", str(path), "--city-key",
         ROOT_PUB.hex(), "--clearinghouse-key", CH_PUB.hex()],
        capture_output=True, text=True, encoding="utf-8", timeout=120, check=False)


def printed_code(output: str) -> str:
    """The code line `timebank verify-statement` prints ("code      3f9a 07c2 …")."""
    lines = [line for line in output.splitlines() if line.startswith("code ")]
    assert len(lines) == 1, output
    return lines[0].removeprefix("code").strip()
