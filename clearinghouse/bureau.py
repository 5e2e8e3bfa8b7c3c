"""The bureau's own signing acts: admission certificates, revocations, rosters and city
policies.

Both are signed by the city root key (signer ``city``) over a ``timebank.v1`` body, as
ADR 0003 and 0005 fix. The clearinghouse checks them with ``usecases.admission`` and
``usecases.policies``; this module only makes them, so it needs the root key, which a
real city keeps offline.
"""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp

from clearinghouse.usecases import roster
from clearinghouse.usecases.admission import ADMISSION, REVOCATION
from clearinghouse.usecases.app import ClearinghouseApp
from timebank import citypolicy
from timebank import roster as rosters
from timebank.envelope import CITY, Signed, sign
from timebank.keys import SigningKey, public_key
from timebank.v1 import clearing_pb2


def _timestamp(at: datetime) -> Timestamp:
    if at.tzinfo is None:
        raise ValueError("refusing a naive datetime: times are signed as UTC")
    stamp = Timestamp()
    stamp.FromDatetime(at.astimezone(UTC))
    return stamp


def issue_admission(city_key: SigningKey, node_id: str, district: str, public_key: bytes,
                    serial: int, not_before: datetime) -> Signed:
    """A city-signed ``admission`` certificate binding node id, district and node key."""
    body = clearing_pb2.AdmissionCertificate(
        node_id=node_id, district=district, public_key=public_key, serial=serial,
        not_before=_timestamp(not_before),
    ).SerializeToString(deterministic=True)
    return sign(ADMISSION, body, CITY, city_key)


def issue_revocation(city_key: SigningKey, node_id: str, key_id: str, reason: str,
                     at: datetime) -> Signed:
    """A city-signed ``revocation`` of one node key, for ever."""
    body = clearing_pb2.Revocation(
        node_id=node_id, key_id=key_id, reason=reason, at=_timestamp(at),
    ).SerializeToString(deterministic=True)
    return sign(REVOCATION, body, CITY, city_key)


def issue_roster(city_key: SigningKey, epoch: int, members: list[rosters.Member],
                 at: datetime) -> Signed:
    """A city-signed ``roster``: the districts admitted at ``epoch``, with their keys."""
    return sign(rosters.KIND, rosters.body(epoch, members, at), CITY, city_key)


def publish_roster(app: ClearinghouseApp, city_key: SigningKey) -> rosters.Roster | None:
    """Sign and publish the roster of who is admitted now, unless the latest one says
    exactly that already (then None). Run after every admission, rotation or revocation:
    until it is, tree heads keep naming the roster before."""
    if app.query(roster.is_current) and app.query(roster.named) is not None:
        return None
    epoch = app.query(roster.next_epoch)
    members = app.query(roster.expected_members)
    act = issue_roster(city_key, epoch, members, app.clock.now())
    return app.execute(roster.publish, act, public_key(city_key))
def issue_policy(city_key: SigningKey, serial: int, policy_toml: str, effective_at: datetime,
                 issued_at: datetime) -> Signed:
    """A city-signed ``policy``: the TOML every node runs from ``effective_at`` on."""
    body = citypolicy.policy_body(serial, policy_toml, effective_at, issued_at)
    return sign(citypolicy.POLICY_KIND, body, CITY, city_key)
