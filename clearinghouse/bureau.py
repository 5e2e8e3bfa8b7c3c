"""The bureau's acts: admission certificates, revocations, rosters, city policies and
the rotations of the city's keys.

Each is signed by the city root key (signer ``city``) over a ``timebank.v1`` body, as
ADR 0003 and 0005 fix, in three steps (ADR 0018): *prepare* the act on the
clearinghouse (``prepare_*``: the bytes to sign, for the root key the chain names),
*sign* it where the root key lives (``timebank.actfile.sign_act``; offline, ``timebank
city sign``), *import* it (``import_act``: checked under the city's keys, then stored
and logged). The one-step ``issue_*`` and ``publish_roster`` sign with a root key at
hand (the demo's) through the same code.
"""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp

from clearinghouse.storage.repo import AdmissionRecord
from clearinghouse.usecases import admission, citykeys, log, policies, roster, settlement
from clearinghouse.usecases.admission import ADMISSION, REVOCATION
from clearinghouse.usecases.app import ClearinghouseApp, Tx
from runtime.errors import InvalidArgument, Refusal
from timebank import actfile, citypolicy, keys
from timebank import citykeys as citykeys_contract
from timebank import roster as rosters
from timebank import settlement as st
from timebank.envelope import Signed
from timebank.keys import SigningKey, public_key
from timebank.v1 import clearing_pb2


def _timestamp(at: datetime) -> Timestamp:
    if at.tzinfo is None:
        raise ValueError("refusing a naive datetime: times are signed as UTC")
    stamp = Timestamp()
    stamp.FromDatetime(at.astimezone(UTC))
    return stamp


def admission_body(node_id: str, district: str, public_key: bytes, serial: int,
                   not_before: datetime) -> bytes:
    """The ``AdmissionCertificate`` the city signs for a district's key."""
    return clearing_pb2.AdmissionCertificate(
        node_id=node_id, district=district, public_key=public_key, serial=serial,
        not_before=_timestamp(not_before),
    ).SerializeToString(deterministic=True)


def revocation_body(node_id: str, key_id: str, reason: str, at: datetime) -> bytes:
    return clearing_pb2.Revocation(
        node_id=node_id, key_id=key_id, reason=reason, at=_timestamp(at),
    ).SerializeToString(deterministic=True)


def _signed(kind: str, body: bytes, city_key: SigningKey) -> Signed:
    """The one way the city signs: the act file's, online or offline."""
    act = actfile.ActFile(kind, body, keys.key_id(public_key(city_key)))
    return actfile.sign_act(act, city_key).envelope


def issue_admission(city_key: SigningKey, node_id: str, district: str, public_key: bytes,
                    serial: int, not_before: datetime) -> Signed:
    """A city-signed ``admission`` certificate binding node id, district and node key."""
    return _signed(ADMISSION, admission_body(node_id, district, public_key, serial,
                                             not_before), city_key)


def issue_revocation(city_key: SigningKey, node_id: str, key_id: str, reason: str,
                     at: datetime) -> Signed:
    """A city-signed ``revocation`` of one node key, for ever."""
    return _signed(REVOCATION, revocation_body(node_id, key_id, reason, at), city_key)


def issue_roster(city_key: SigningKey, epoch: int, members: list[rosters.Member],
                 at: datetime) -> Signed:
    """A city-signed ``roster``: the districts admitted at ``epoch``, with their keys."""
    return _signed(rosters.KIND, rosters.body(epoch, members, at), city_key)


def publish_roster(app: ClearinghouseApp, city_key: SigningKey) -> rosters.Roster | None:
    """Sign and publish the roster of who is admitted now, unless the latest one says
    exactly that already (then None). Run after every admission, rotation or revocation:
    until it is, tree heads keep naming the roster before."""
    body = _roster_body(app)
    if body is None:
        return None
    envelope = _signed(rosters.KIND, body, city_key)
    return app.execute(roster.publish, envelope, public_key(city_key))


def issue_policy(city_key: SigningKey, serial: int, policy_toml: str, effective_at: datetime,
                 issued_at: datetime) -> Signed:
    """A city-signed ``policy``: the TOML every node runs from ``effective_at`` on."""
    body = citypolicy.policy_body(serial, policy_toml, effective_at, issued_at)
    return _signed(citypolicy.POLICY_KIND, body, city_key)


def decision_body(serial: int, revision: int, statement_sha256: bytes, *, revise: bool,
                  overruled: list[str], excluded: list[str], reason: str,
                  at: datetime) -> bytes:
    """The ``SettlementDecision`` the city signs on a disputed statement revision."""
    return clearing_pb2.SettlementDecision(
        serial=serial, revision=revision, statement_sha256=statement_sha256, revise=revise,
        overruled_node_ids=sorted(set(overruled)), excluded_claim_ids=sorted(set(excluded)),
        reason=reason, at=_timestamp(at)).SerializeToString(deterministic=True)


def default_body(serial: int, statement_sha256: bytes, node_id: str, unpaid_minutes: int,
                 unpaid_fen: int, treatment: str, reason: str, at: datetime) -> bytes:
    """The ``SettlementDefault`` the city signs for a district that did not settle."""
    return clearing_pb2.SettlementDefault(
        serial=serial, statement_sha256=statement_sha256, node_id=node_id,
        unpaid_minutes=unpaid_minutes, unpaid_fen=unpaid_fen, treatment=treatment,
        reason=reason, at=_timestamp(at)).SerializeToString(deterministic=True)


def issue_settlement_act(city_key: SigningKey, kind: str, body: bytes) -> Signed:
    """A city-signed ``settlement.decision`` or ``settlement.default``."""
    if kind not in (st.DECISION_KIND, st.DEFAULT_KIND):
        raise InvalidArgument(f"{kind[:32]!r} is not a settlement act", "WRONG_KIND")
    return _signed(kind, body, city_key)


# ---------------------------------------------------------------- prepare, sign, import

def root_key_id(app: ClearinghouseApp) -> str:
    """The id of the root key that signs the city's next act (the chain's current one)."""
    return keys.key_id(app.query(citykeys.chain).current_root)


def prepared(app: ClearinghouseApp, kind: str, body: bytes) -> actfile.ActFile:
    """An act for the current root key to sign (its body is checked when it is shown,
    signed and imported)."""
    return actfile.ActFile(kind, body, root_key_id(app))


def _roster_body(app: ClearinghouseApp) -> bytes | None:
    """The roster of who is admitted now, next epoch; None if the latest says so."""
    if app.query(roster.is_current) and app.query(roster.named) is not None:
        return None
    epoch = app.query(roster.next_epoch)
    members = app.query(roster.expected_members)
    return rosters.body(epoch, members, app.clock.now())


def prepare_roster(app: ClearinghouseApp) -> actfile.ActFile | None:
    """The roster of who is admitted now, for the root key to sign; None if the latest
    roster says so already."""
    body = _roster_body(app)
    return None if body is None else prepared(app, rosters.KIND, body)


def prepare_city_key(app: ClearinghouseApp, new_root: bytes) -> actfile.ActFile:
    """A rotation of the city root key to ``new_root``, keeping valid every act of the
    current root this clearinghouse holds."""
    chain = app.query(citykeys.chain)
    kept = app.query(citykeys.signed_by, chain.current_root)
    body = citykeys_contract.root_rotation_body(
        chain.root_rotations + 1, chain.current_root, new_root, kept,
        int(app.clock.now().timestamp()))
    return prepared(app, citykeys_contract.CITY_KEY, body)


def prepare_clearinghouse_key(app: ClearinghouseApp, new_key: bytes,
                              margin: int = 0) -> actfile.ActFile:
    """A rotation of the clearinghouse key to ``new_key``, taking effect at the head that
    holds the rotation's own leaf (plus ``margin`` leaves, for a busy log)."""
    chain = app.query(citykeys.chain)
    size = app.query(lambda tx: log.log_of(tx).size())
    body = citykeys_contract.clearinghouse_rotation_body(
        len(chain.clearinghouse_rotations) + 1, chain.log_keys().keys[-1], new_key,
        size + 1 + margin, int(app.clock.now().timestamp()))
    return prepared(app, citykeys_contract.CLEARINGHOUSE_KEY, body)


Imported = (AdmissionRecord | None | rosters.Roster | policies.Issued | citykeys.Rotated
            | settlement.Decided | int)


def import_act(app: ClearinghouseApp, act: actfile.ActFile,
               sign: settlement.Sign | None = None) -> Imported:
    """Take a signed act: checked under the city's keys as this clearinghouse follows
    them (never a key file on this machine), then stored and logged, in one
    transaction; a refusal changes nothing. ``sign`` (the clearinghouse key) signs the
    revised statement a revising settlement decision issues; a settlement default
    returns its log leaf."""
    envelope = act.envelope

    def run(tx: Tx) -> Imported:
        root = citykeys.chain(tx).current_root
        if act.kind == ADMISSION:
            return admission.admit(tx, envelope, root)
        if act.kind == REVOCATION:
            admission.revoke(tx, envelope, root)
            return None
        if act.kind == rosters.KIND:
            return roster.publish(tx, envelope, root)
        if act.kind == citypolicy.POLICY_KIND:
            return policies.issue(tx, envelope, root)
        if act.kind == citykeys_contract.CITY_KEY:
            return citykeys.rotate_root(tx, envelope)
        if act.kind == citykeys_contract.CLEARINGHOUSE_KEY:
            return citykeys.rotate_clearinghouse(tx, envelope)
        if act.kind == st.DECISION_KIND:
            return settlement.decide(tx, envelope, root, sign)
        if act.kind == st.DEFAULT_KIND:
            return settlement.default(tx, envelope, root)
        raise InvalidArgument(f"{act.kind[:32]!r} is not a city act", "WRONG_KIND")

    try:
        return app.execute(run)
    except Refusal as e:
        raise type(e)(f"城市文件被拒绝，未做任何更改 / the act was refused, nothing changed: "
                      f"{e.message}", e.reason) from None
