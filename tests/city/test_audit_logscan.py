"""The audit's one pass over the log (``city.audit.logscan.LogScan``) as it reads the
districts' checkpoints: each must be signed by the key the district held when it was
logged, as the city's admissions before that leaf say (real Ed25519 keys, real
city-signed certificates and revocations, leaves serialised as the clearinghouse
writes them); and the ``Frontier`` that gives a ledger's root at every count."""

from __future__ import annotations

import os
from datetime import UTC, datetime

import pytest

from city.audit.frontier import Frontier
from city.audit.logscan import LogScan
from clearinghouse.bureau import issue_admission, issue_revocation
from clearinghouse.usecases.wire import to_bytes
from timebank import anchors, keys, merkle
from timebank.envelope import sign
from timebank.keys import key_id
from timebank.v1 import clearing_pb2 as pb

NOW = datetime(2026, 3, 1, tzinfo=UTC)
NODE = "320115"
CITY = keys.generate()
OLD, NEW = keys.generate(), keys.generate()


def _leaf(kind: str, envelope: bytes, node_id: str = NODE) -> bytes:
    return pb.LogEntry(kind=kind, envelope=envelope, node_id=node_id).SerializeToString(
        deterministic=True)


def admission(key: keys.SigningKey, serial: int, city: keys.SigningKey = CITY,
              node_id: str = NODE) -> bytes:
    return _leaf("admission", to_bytes(issue_admission(city, node_id, "江宁区",
                                                       keys.public_key(key), serial, NOW)),
                 node_id)


def revocation(key: keys.SigningKey) -> bytes:
    return _leaf("revocation", to_bytes(issue_revocation(
        CITY, NODE, key_id(keys.public_key(key)), "lost", NOW)))


def checkpoint(key: keys.SigningKey, count: int, head: bytes = b"\x01" * 32,
               signer: str = NODE, leaf_node: str | None = None) -> bytes:
    body = pb.NodeCheckpoint(node_id=NODE, entry_count=count, chain_head=head,
                             ledger_root=b"\x02" * 32).SerializeToString(deterministic=True)
    return _leaf(anchors.LEAF_KIND, to_bytes(sign(anchors.CHECKPOINT_KIND, body, signer, key)),
                 node_id=leaf_node or signer)


def scan(*leaves: bytes, city_key: bytes | None = None) -> LogScan:
    found = LogScan("clearinghouse.sqlite3",
                    city_key=keys.public_key(CITY) if city_key is None else city_key)
    for idx, data in enumerate(leaves):
        found.add(idx, data)
    return found


def test_a_checkpoint_is_valid_under_the_key_held_when_it_was_logged() -> None:
    found = scan(admission(OLD, 1), checkpoint(OLD, 3), admission(NEW, 2),
                 checkpoint(NEW, 7))
    assert found.bad is None, found.bad
    assert [(c.index, c.entry_count) for c in found.checkpoints[NODE]] == [(1, 3), (3, 7)]


@pytest.mark.parametrize("leaves, idx, words", [
    # the old key after the rotation: retired, as the clearinghouse would refuse it
    ([admission(OLD, 1), admission(NEW, 2), checkpoint(OLD, 3)], 2, "WRONG_KEY"),
    # the new key before the city admitted it
    ([admission(OLD, 1), checkpoint(NEW, 3), admission(NEW, 2)], 1, "WRONG_KEY"),
    # after the district's key was revoked, before any new one
    ([admission(OLD, 1), revocation(OLD), checkpoint(OLD, 3)], 2, "no admitted, unrevoked"),
    # a district never admitted
    ([checkpoint(OLD, 3)], 0, "no admitted, unrevoked"),
    # another district cannot anchor this ledger, nor have its checkpoint filed as this
    ([admission(OLD, 1), admission(NEW, 1, node_id="320106"),
      checkpoint(NEW, 3, signer="320106")], 2, "not of its ledger"),
    ([admission(OLD, 1), admission(NEW, 1, node_id="320106"),
      checkpoint(NEW, 3, signer="320106", leaf_node=NODE)], 2, "not 320115's checkpoint"),
    # a district's checkpoint under another district's key
    ([admission(OLD, 1), admission(NEW, 1, node_id="320106"),
      checkpoint(OLD, 3, signer="320106")], 2, "WRONG_KEY"),
    # fewer entries than anchored before, or as many with another head
    ([admission(OLD, 1), checkpoint(OLD, 5), checkpoint(OLD, 4)], 2, "rewrites"),
    ([admission(OLD, 1), checkpoint(OLD, 5), checkpoint(OLD, 5, b"\x03" * 32)], 2,
     "rewrites"),
    # an admission the city root key did not sign gives no key
    ([admission(OLD, 1, city=NEW), checkpoint(OLD, 3)], 0, "city root key"),
])
def test_a_checkpoint_the_clearinghouse_should_have_refused(
        leaves: list[bytes], idx: int, words: str) -> None:
    found = scan(*leaves)
    assert found.bad is not None
    assert (found.bad.table, found.bad.entry) == ("log_leaves", f"idx {idx}")
    assert words in found.bad.problem
    assert all(c.index != idx for c in found.checkpoints.get(NODE, []))


def test_the_same_checkpoint_logged_twice_is_allowed() -> None:
    found = scan(admission(OLD, 1), checkpoint(OLD, 5), checkpoint(OLD, 5))
    assert found.bad is None
    assert [c.index for c in found.checkpoints[NODE]] == [1, 2]


@pytest.mark.parametrize("size", [0, 1, 2, 3, 5, 8, 13, 64, 100, 1000])
def test_the_frontier_root_is_the_contracts_root_at_every_size(size: int) -> None:
    leaves = [os.urandom(32) for _ in range(size)]
    tree = Frontier()
    for n, data in enumerate(leaves):
        assert tree.root() == merkle.root(leaves[:n])
        tree.append(data)
    assert (tree.size, tree.root()) == (size, merkle.root(leaves))


def test_the_audit_reads_the_heads_under_the_nodes_own_keys() -> None:
    """The audit's read format names the meta keys the node writes its heads under."""
    from city.audit import tables
    from node.usecases import tree_heads

    assert tables.HELD_HEAD_KEYS == (tree_heads.VERIFIED, tree_heads.COSIGNED)
