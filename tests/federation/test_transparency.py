"""The transparency log as the districts see it: every receipt proven in a signed tree
head before it is acted on, heads witnessed and cosigned, ledgers anchored; and a
clearinghouse that rewrites its log after a district has seen it is caught by that
district, which applies nothing and never cosigns the rewritten history."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from nacl.signing import SigningKey

from clearinghouse.bureau import issue_admission
from clearinghouse.usecases import admission
from node.link.clearing_link import ClearingLink
from node.link.verified_log import ReceiptError
from node.usecases import tree_heads
from tests.federation.conftest import CH_KEY, CITY_ROOT, City
from tests.federation.support import GL, JN, QX, enrol_at, restart_link
from tests.helpers import id_card
from timebank import anchors, merkle, transparency
from timebank import checkpoint as notes
from timebank.envelope import Signed, sign, verify
from timebank.keys import key_id, public_key
from timebank.v1 import clearing_pb2, clearing_pb2_grpc

CH_PUBLIC = public_key(CH_KEY)


def verified(city: City, node_id: str) -> transparency.Head | None:
    return city[node_id].app.query(tree_heads.verified, CH_PUBLIC)


def stub(city: City) -> clearing_pb2_grpc.ClearinghouseServiceStub:
    return clearing_pb2_grpc.ClearinghouseServiceStub(grpc.insecure_channel(city.address))


def test_a_receipt_is_acted_on_only_once_proven_in_a_signed_head(city: City) -> None:
    enrol_at(city, JN, "王芳", id_card(1965))  # registers her with the directory
    city.settle()
    head = verified(city, JN)
    assert head is not None and head.size >= 1
    # the head the node kept is the clearinghouse's, and the log's leaf for the
    # registration is in it
    log = stub(city)
    entries = [clearing_pb2.LogEntry.FromString(e) for e in log.GetEntries(
        clearing_pb2.GetEntriesRequest(start=0, end=head.size), timeout=5).entries]
    registrations = [i for i, e in enumerate(entries)
                     if e.kind == "registration" and e.node_id == JN]
    assert registrations
    proof = log.GetInclusionProof(clearing_pb2.GetInclusionProofRequest(
        index=registrations[0], size=head.size), timeout=5)
    assert merkle.verify_inclusion(proof.logged.entry, registrations[0], head.size,
                                   list(proof.logged.path), head.root)


def test_districts_witness_heads_and_a_quorum_cosigns(city: City) -> None:
    enrol_at(city, JN, "王芳", id_card(1965))
    city.settle()
    sizes = {n: city[n].link.witness_once() for n in (JN, GL, QX)}
    assert all(size >= 1 for size in sizes.values())
    head = stub(city).GetTreeHead(clearing_pb2.GetTreeHeadRequest(cosigned=True), timeout=5).head
    assert sorted(head.cosigners) == sorted((JN, GL, QX))
    # the signed head says how many districts the city had, and when it was signed
    checked = transparency.check_head(head.note, CH_PUBLIC)
    assert checked.districts == 3 and transparency.quorum(checked.districts) == 2
    assert checked.at == head.at.seconds == int(city.clock.now().timestamp())
    keys = {transparency.witness_name(n): public_key(city[n].key) for n in (JN, GL, QX)}
    assert set(notes.cosigners(head.note, keys)) == set(keys)
    # nothing new: a witness does not cosign the same head twice
    assert city[JN].link.witness_once() == 0


def test_a_ledger_checkpoint_is_anchored_with_its_proof(city: City) -> None:
    enrol_at(city, JN, "王芳", id_card(1965))
    city.settle()
    requested = city[JN].link.checkpoint_now()
    assert requested.queued
    city.settle()
    anchor = city[JN].app.query(lambda tx: tx.repo.anchors.latest())
    assert anchor is not None and anchor.entry_count == requested.entry_count
    head = transparency.check_head(anchor.tree_head, CH_PUBLIC)
    entry = clearing_pb2.LogEntry.FromString(anchor.log_entry)
    assert entry.kind == "checkpoint" and entry.envelope == anchor.checkpoint
    transparency.check_included(anchor.log_entry, anchor.log_index, head,
                                anchors.proof_path(anchor.log_proof))
    # the same ledger again: nothing new to anchor
    assert not city[JN].link.checkpoint_now().queued


def test_after_a_key_rotation_the_unchanged_ledger_is_anchored_again(city: City) -> None:
    enrol_at(city, JN, "王芳", id_card(1965))
    city.settle()
    first = city[JN].link.checkpoint_now()
    city.settle()
    old_anchor = city[JN].app.query(lambda tx: tx.repo.anchors.latest())
    assert old_anchor is not None and old_anchor.key_id == key_id(public_key(city[JN].key))
    # the bureau rotates 江宁区's key; the node comes back with the new one
    new_key = SigningKey(b"jiangning's rotated key".ljust(32, b"."))
    city.ch.execute(admission.admit, issue_admission(
        CITY_ROOT, JN, "江宁区", public_key(new_key), 2, city.clock.now()),
        public_key(CITY_ROOT))
    city[JN].link.stop()
    city[JN].key = new_key
    restart_link(city, JN)
    again = city[JN].link.checkpoint_now()
    assert again.queued and again.entry_count == first.entry_count
    assert again.chain_head == first.chain_head and again.ledger_root == first.ledger_root
    city.settle()
    assert not city[JN].link.checkpoint_now().queued  # this key anchored it now
    anchor = city[JN].app.query(lambda tx: tx.repo.anchors.latest())
    assert anchor is not None and anchor.key_id == key_id(public_key(new_key))
    assert anchor.entry_count == first.entry_count and anchor.log_index > old_anchor.log_index
    both = city[JN].app.query(lambda tx: tx.repo.anchors.at(first.entry_count))
    assert [a.key_id for a in both] == [old_anchor.key_id, anchor.key_id]
    # the new anchor is in the log: its leaf records the envelope the new key signed
    head = transparency.check_head(anchor.tree_head, CH_PUBLIC)
    transparency.check_included(anchor.log_entry, anchor.log_index, head,
                                anchors.proof_path(anchor.log_proof))
    entry = clearing_pb2.LogEntry.FromString(stub(city).GetEntries(clearing_pb2.GetEntriesRequest(
        start=anchor.log_index, end=anchor.log_index + 1), timeout=5).entries[0])
    assert entry.kind == "checkpoint" and entry.envelope == anchor.checkpoint
    sent = clearing_pb2.Envelope.FromString(entry.envelope)
    body = verify(Signed(sent.kind, sent.body, sent.signer, sent.key_id, sent.signature),
                  public_key(new_key))
    assert clearing_pb2.NodeCheckpoint.FromString(body).entry_count == first.entry_count


def _rewrite_log_from(db: Path, index: int) -> None:
    """What a dishonest clearinghouse would do: drop every leaf from ``index`` on (and
    the heads and hashes over them), to append another history in their place."""
    with sqlite3.connect(db) as conn:
        conn.execute("DELETE FROM cosignatures WHERE size > ?", (index,))
        conn.execute("DELETE FROM tree_heads WHERE size > ?", (index,))
        conn.execute("DELETE FROM log_leaves WHERE idx >= ?", (index,))
        conn.execute("DELETE FROM log_hashes WHERE (idx + 1) * (1 << level) > ?", (index,))


def test_a_district_catches_a_clearinghouse_that_rewrites_its_log(
        city: City, tmp_path: Path) -> None:
    # 鼓楼区 witnesses only when asked here, so that it sees only the rewritten history
    gl = city[GL]
    gl.link.stop()
    gl.link = ClearingLink(gl.app, city.address, CH_PUBLIC, gl.key, witness_seconds=3600)
    gl.link.start()
    enrol_at(city, JN, "王芳", id_card(1965))
    city.settle()
    city[JN].link.witness_once()
    seen = verified(city, JN)
    cosigned_before = city[JN].app.query(tree_heads.cosigned, CH_PUBLIC)
    assert seen is not None and cosigned_before is not None
    # The clearinghouse forks: it forgets 江宁区's registration and shows another
    # history of more leaves to everyone.
    _rewrite_log_from(tmp_path / "ch.sqlite3", seen.size - 1)
    for i in range(3):
        enrol_at(city, GL, f"李{i}", id_card(1950 + i, GL))
    city.settle()
    forked = stub(city).GetTreeHead(clearing_pb2.GetTreeHeadRequest(), timeout=5).head
    assert forked.size > seen.size
    # 鼓楼区 was shown the other history, and took it: its receipts are proven in it
    shown = verified(city, GL)
    assert shown is not None and shown.size > seen.size - 1
    assert gl.link.witness_once() == forked.size
    # 江宁区 refuses it: as a witness, and on its next receipt
    with pytest.raises(ReceiptError, match="not consistent"):
        city[JN].link.witness_once()
    assert verified(city, JN) == seen
    assert city[JN].app.query(tree_heads.cosigned, CH_PUBLIC) == cosigned_before
    cosigners = stub(city).GetTreeHead(
        clearing_pb2.GetTreeHeadRequest(size=forked.size), timeout=5).head.cosigners
    assert JN not in cosigners


def _refusal(call: grpc.RpcError) -> tuple[grpc.StatusCode, str]:
    assert isinstance(call, grpc.Call)
    status = rpc_status.from_call(call)
    assert status is not None
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    return call.code(), info.reason


def test_bad_requests_to_the_log_are_refused_clearly_and_change_nothing(city: City) -> None:
    jn = city[JN]  # witnesses only when asked: the cosignatures here are the test's
    jn.link.stop()
    jn.link = ClearingLink(jn.app, city.address, CH_PUBLIC, jn.key, witness_seconds=3600)
    jn.link.start()
    enrol_at(city, JN, "王芳", id_card(1965))
    city.settle()
    log = stub(city)
    size = log.GetTreeHead(clearing_pb2.GetTreeHeadRequest(), timeout=5).head.size
    head = log.GetTreeHead(clearing_pb2.GetTreeHeadRequest(size=size), timeout=5).head
    text = notes.SignedNote.parse(head.note).text

    def cosign(body: clearing_pb2.CosignBody, signer: str = JN) -> clearing_pb2.Envelope:
        key = city[signer].key
        e = sign("cosign", body.SerializeToString(), signer, key)
        return clearing_pb2.Envelope(kind=e.kind, body=e.body, signer=e.signer,
                                     key_id=e.key_id, signature=e.signature)

    good_line = notes.cosign(text, transparency.witness_name(JN), jn.key, 1).rstrip("\n")
    wrong_key = notes.cosign(text, transparency.witness_name(JN), city[GL].key,
                             1).rstrip("\n")
    too_new = notes.cosign(text, transparency.witness_name(JN), jn.key,
                           int(city.clock.now().timestamp()) + notes.MAX_COSIGNATURE_SKEW
                           + 1).rstrip("\n")
    before = city.ch.query(lambda tx: (tx.repo.conn.exec_driver_sql(
        "SELECT count(*) FROM cosignatures").scalar()))
    cases: list[tuple[Any, Any, tuple[grpc.StatusCode, str]]] = [
        (log.GetEntries, clearing_pb2.GetEntriesRequest(start=size, end=size + 1),
         (grpc.StatusCode.INVALID_ARGUMENT, "BAD_LOG_RANGE")),
        (log.GetEntries, clearing_pb2.GetEntriesRequest(start=0, end=5000),
         (grpc.StatusCode.INVALID_ARGUMENT, "BAD_LOG_RANGE")),
        (log.GetTreeHead, clearing_pb2.GetTreeHeadRequest(size=size + 1000),
         (grpc.StatusCode.NOT_FOUND, "NO_TREE_HEAD")),
        (log.GetInclusionProof, clearing_pb2.GetInclusionProofRequest(size=size),
         (grpc.StatusCode.INVALID_ARGUMENT, "BAD_LOG_RANGE")),
        (log.GetInclusionProof, clearing_pb2.GetInclusionProofRequest(index=size, size=size),
         (grpc.StatusCode.INVALID_ARGUMENT, "BAD_LOG_RANGE")),
        (log.GetConsistencyProof,
         clearing_pb2.GetConsistencyProofRequest(old_size=size + 1, new_size=size),
         (grpc.StatusCode.INVALID_ARGUMENT, "BAD_LOG_RANGE")),
        (log.AddCosignature, cosign(clearing_pb2.CosignBody(
            node_id=JN, size=size, signature_line=wrong_key)),
         (grpc.StatusCode.PERMISSION_DENIED, "BAD_COSIGNATURE")),
        (log.AddCosignature, cosign(clearing_pb2.CosignBody(
            node_id=JN, size=size, signature_line=too_new)),
         (grpc.StatusCode.PERMISSION_DENIED, "COSIGNATURE_IN_FUTURE")),
        (log.AddCosignature, cosign(clearing_pb2.CosignBody(
            node_id=JN, size=size, signature_line="not\na line")),
         (grpc.StatusCode.INVALID_ARGUMENT, "MALFORMED_COSIGNATURE")),
        (log.AddCosignature, cosign(clearing_pb2.CosignBody(
            node_id=JN, size=size, signature_line=good_line), signer=GL),
         (grpc.StatusCode.PERMISSION_DENIED, "NOT_YOUR_SIGNATURE")),
        (log.AddCosignature, cosign(clearing_pb2.CosignBody(
            node_id=JN, size=size + 1000, signature_line=good_line)),
         (grpc.StatusCode.NOT_FOUND, "NO_TREE_HEAD")),
    ]
    for method, request, expected in cases:
        with pytest.raises(grpc.RpcError) as caught:
            method(request, timeout=5)
        assert _refusal(caught.value) == expected, (request, caught.value.details())
    after = city.ch.query(lambda tx: (tx.repo.conn.exec_driver_sql(
        "SELECT count(*) FROM cosignatures").scalar()))
    assert after == before
    # the good one is taken, once
    assert JN in log.AddCosignature(cosign(clearing_pb2.CosignBody(
        node_id=JN, size=size, signature_line=good_line)), timeout=5).head.cosigners
