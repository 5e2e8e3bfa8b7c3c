"""Which city policy this node runs, and when (``timebank.citypolicy``).

The node runs only a policy the city signed. Its link fetches the city's ``policy``
acts from the clearinghouse (``node.link.policies``), and each is checked with the
contract's reader under the city public key in the node's configuration, never a key the
clearinghouse names; what passes is stored (``store``) and checked again whenever the
node opens (``verified``). The policy in force at an instant is the stored one with the
highest serial whose effective time is at or before it: every use-case reads the policy
in force at its own transaction's time (``PolicyBook.at``), so a change takes effect at
the time the city stated, on every node, without a restart.

**Before the first city policy is in force** the node runs its local policy file (the
one ``timebank node init`` wrote). This keeps a new city, and a node whose link has not
reached the clearinghouse yet, working; it cannot be used to run another policy for
long, because once the city has a policy in force the clearinghouse refuses every claim
made under any other (POLICY_NOT_CURRENT), and the node's checkpoints name the policy
it runs (``policy_sha256``) in the log for anyone to compare.

The hot path is one ``bisect`` over the points in time where the policy changes; the
texts are parsed once, when the book is built.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from google.protobuf.message import DecodeError

from node.domain.policy import Policy
from node.storage.policies import StoredPolicy
from runtime.errors import InvariantViolation
from timebank import citypolicy
from timebank.citykeys import CityKeys
from timebank.citypolicy import CityPolicy, PolicyActError
from timebank.envelope import EnvelopeError, Signed
from timebank.v1 import clearing_pb2

if TYPE_CHECKING:  # the app holds a PolicyBook; use-cases get its Tx
    from node.usecases.app import Tx


@dataclass(frozen=True, slots=True)
class PolicyBook:
    """The policies this node may run: its local file, and the city-signed policies it
    holds, by serial. Immutable: a new fetch makes a new book."""

    local: Policy
    city: tuple[CityPolicy, ...] = ()
    _starts: tuple[datetime, ...] = field(default=(), init=False, repr=False)
    _terms: tuple[CityPolicy, ...] = field(default=(), init=False, repr=False)

    def __post_init__(self) -> None:
        serials = [p.serial for p in self.city]
        if serials != sorted(set(serials)):
            raise InvariantViolation("a policy book holds each serial once, in order")
        changes = citypolicy.timeline(self.city)
        object.__setattr__(self, "_starts", tuple(at for at, _ in changes))
        object.__setattr__(self, "_terms", tuple(p for _, p in changes))

    def in_force(self, at: datetime) -> CityPolicy | None:
        """The city-signed policy in force at ``at`` (None: none yet; the local file)."""
        i = bisect.bisect_right(self._starts, at)
        return self._terms[i - 1] if i else None

    def at(self, at: datetime) -> Policy:
        """The policy this node applies at ``at``."""
        i = bisect.bisect_right(self._starts, at)
        return self._terms[i - 1].policy if i else self.local

    def next_change(self, at: datetime) -> CityPolicy | None:
        """The city policy that comes into force next after ``at``, if one is scheduled."""
        i = bisect.bisect_right(self._starts, at)
        return self._terms[i] if i < len(self._terms) else None

    @property
    def last_serial(self) -> int:
        return self.city[-1].serial if self.city else 0

    def with_city(self, policies: Iterable[CityPolicy]) -> PolicyBook:
        return PolicyBook(self.local, tuple(sorted(policies, key=lambda p: p.serial)))


@dataclass(frozen=True, slots=True)
class PolicyView:
    """The policy in force at a time, whether the city signed it, and what comes next."""

    policy: Policy
    city: CityPolicy | None  # None: the node's local file
    next: CityPolicy | None  # the city policy scheduled to come into force next


def view(book: PolicyBook, at: datetime) -> PolicyView:
    return PolicyView(book.at(at), book.in_force(at), book.next_change(at))


def envelope_of(data: bytes) -> Signed:
    """A ``timebank.v1.Envelope``'s bytes as a ``Signed`` (PolicyActError if they are not
    one)."""
    try:
        message = clearing_pb2.Envelope.FromString(data)
        return Signed(message.kind, message.body, message.signer, message.key_id,
                      message.signature)
    except (DecodeError, EnvelopeError) as e:
        raise PolicyActError("MALFORMED", f"not a signed envelope ({e})") from None


def verified(stored: Iterable[StoredPolicy], city_public_key: bytes | CityKeys,
             ) -> list[CityPolicy]:
    """The stored policies, each verified again under ``city_public_key``; a row that no
    longer verifies (another city key configured, or a changed row) raises
    ``PolicyActError`` naming its serial."""
    out = []
    for row in stored:
        try:
            act = citypolicy.read_city_policy(envelope_of(row.envelope), city_public_key)
        except PolicyActError as e:
            raise PolicyActError(e.reason, f"stored city policy {row.serial}: {e.message}"
                                 ) from None
        if (act.serial, act.sha256) != (row.serial, bytes(row.policy_sha256)):
            raise PolicyActError("MALFORMED", f"stored city policy {row.serial} is not the "
                                 "policy its envelope signs")
        out.append(act)
    return out


@dataclass(frozen=True, slots=True)
class Stored:
    """What ``store`` did: the policies newly stored, and the serials the clearinghouse
    gave a different signed policy for than the one already stored (kept: the first)."""

    added: tuple[CityPolicy, ...]
    conflicts: tuple[int, ...]


def stored(tx: Tx) -> list[StoredPolicy]:
    """Every city policy stored on this node, by serial (not verified here)."""
    return tx.repo.policies.all()


def store(tx: Tx, acts: Sequence[CityPolicy]) -> Stored:
    """Store the verified city policies this node does not hold yet. A serial already
    stored with another body is a conflict: the first stays (a policy in force never
    changes under a node), and the caller reports it."""
    held = {row.serial: bytes(row.policy_sha256) for row in tx.repo.policies.all()}
    added, conflicts = [], []
    for act in sorted(acts, key=lambda a: a.serial):
        if act.serial in held:
            if held[act.serial] != act.sha256:
                conflicts.append(act.serial)
            continue
        tx.repo.policies.add(StoredPolicy(act.serial, act.sha256, act.effective_at,
                                          _envelope_bytes(act.envelope), tx.now))
        held[act.serial] = act.sha256
        added.append(act)
    return Stored(tuple(added), tuple(conflicts))


def _envelope_bytes(envelope: Signed) -> bytes:
    return clearing_pb2.Envelope(
        kind=envelope.kind, body=envelope.body, signer=envelope.signer,
        key_id=envelope.key_id, signature=envelope.signature,
    ).SerializeToString(deterministic=True)

