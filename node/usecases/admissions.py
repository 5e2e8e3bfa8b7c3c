"""The city's admissions as this node verified them (issue 14).

The node knows the city root's public key from its own configuration, never from the
clearinghouse; it follows the rotations of that key the city signed (``chain``, ADR
0018), so an act a rotated-out root key signs later counts for nothing. The link
fetches the city's acts (admission certificates, revocations,
rosters, policies) from the clearinghouse, keeps those that verify under that key
(``timebank.admissions.verify_act``) and ``record``s them here; nothing is ever removed,
so a revocation once seen stays seen. ``view`` is what they say: which keys sign for
which district (the link checks every relayed envelope against it before the node acts
on it, ``claims.apply_delivery``), and which districts the city admits now
(``require_admitted``, before a move or a redemption holds anything).
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache

from node.storage.city import CityEnvelopeRecord
from node.usecases.app import Tx
from runtime.errors import FailedPrecondition, ResourceExhausted, Unavailable
from timebank.admissions import (
    MAX_ACTS,
    AdmissionsError,
    CityAct,
    CityAdmissions,
    chain_of,
    verify_act,
)
from timebank.citykeys import CityKeys, KeyChainError


def record(tx: Tx, acts: Iterable[CityAct]) -> int:
    """Store the acts not stored yet (each already checked by ``verify_act`` under this
    node's city key); return how many were new."""
    known = tx.repo.city.digests()
    new: dict[bytes, CityAct] = {}
    for act in acts:
        if act.digest not in known:
            new.setdefault(act.digest, act)
    if len(known) + len(new) > MAX_ACTS:
        raise ResourceExhausted(f"the city's acts would exceed {MAX_ACTS}, the most a node "
                                "keeps", "TOO_MANY_CITY_ACTS")
    for act in new.values():
        tx.repo.city.add(CityEnvelopeRecord(act.digest, act.kind, act.node_id, act.envelope),
                         tx.now)
    return len(new)


def view(tx: Tx) -> CityAdmissions:
    """What the stored acts say, each checked again under the node's city key (an act
    that does not verify, say after the key in the configuration was corrected, counts
    for nothing)."""
    if not tx.node.city_key:
        return CityAdmissions()
    return _verified(tx.node.city_key, tx.repo.city.envelopes())


@lru_cache(maxsize=8)
def _verified(city_key: bytes, envelopes: tuple[bytes, ...]) -> CityAdmissions:
    """The view of these envelopes, made once for each set: a move or a redemption reads
    it, and the set changes only when the city acts."""
    try:
        keys = chain_of(city_key, envelopes)
    except KeyChainError:
        return CityAdmissions()  # two rotations with one serial: trust no act
    acts = []
    for envelope in envelopes:
        try:
            acts.append(verify_act(envelope, keys))
        except AdmissionsError:
            continue
    return CityAdmissions(acts)


def chain(tx: Tx, clearinghouse: bytes | None = None) -> CityKeys:
    """The chain of the city's keys from the node's configured city key through the
    rotations it stored (the city key alone if it stored none)."""
    return chain_of(tx.node.city_key, tx.repo.city.envelopes(), clearinghouse)


def require_admitted(tx: Tx, node_id: str, what: str) -> None:
    """Refuse, before anything is held, a claim with a district the city does not admit
    now by its own signature: no certificate names the district, or its current key is
    revoked. ``what`` says what was refused ("a move there"). A node that
    runs alone refuses its claims before this (NOT_FEDERATED)."""
    if not tx.node.federated:
        return
    if not tx.node.city_key:
        raise FailedPrecondition(
            "this node's configuration names no city key ([city] public_key), so it "
            "cannot tell which districts the city admits", "NO_CITY_KEY")
    city = view(tx)
    if not len(city):
        raise Unavailable(
            "this node has not yet fetched the city's admissions from the clearinghouse "
            "and verified them; try again once it is connected", "ADMISSIONS_UNKNOWN")
    if city.admitted(node_id) is None:
        why = ("the key of its current certificate is revoked" if city.certificates(node_id)
               else "no admission certificate signed by the city names it")
        raise FailedPrecondition(
            f"district {node_id} is not admitted to the city ({why}): {what} cannot be "
            "settled", "DISTRICT_NOT_ADMITTED")
