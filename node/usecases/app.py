"""The use-case runner: each use-case is one database transaction.

``NodeApp.execute`` runs a use-case; ``execute_once`` also makes it idempotent:
the first response under a key is stored in the same transaction and returned
again on a retry; the same key with a different request is ALREADY_EXISTS.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from typing import Concatenate, ParamSpec, TypeVar

from node.domain.access import LoginRules
from node.domain.clock import Clock
from node.domain.policy import Policy
from node.storage.db import Database
from node.storage.repo import Repo
from node.usecases.policies import PolicyBook
from runtime.errors import AlreadyExists, InvalidArgument, InvariantViolation
from timebank.citytime import CITY_TZ
from timebank.citytime import city_time as city_time  # where the use-cases take it from
from timebank.ids import is_node_id
from timebank.keys import PUBLIC_KEY_LEN

P = ParamSpec("P")
T = TypeVar("T")

MAX_IDEMPOTENCY_KEY = 64
DEFAULT_LOGIN_RULES = LoginRules()


@dataclass(frozen=True, slots=True)
class NodeIdentity:
    node_id: str  # 6-digit administrative division code, e.g. "320115"
    district: str  # e.g. "江宁区"
    city_secret: bytes  # keys PersonRef; never leaves the node
    federated: bool = False  # connected to the city clearinghouse
    #: The city root's Ed25519 public key, from this node's configuration (never from the
    #: clearinghouse): what the city signs is checked with it. Empty: none configured.
    city_key: bytes = b""
    #: The ``[auth]`` settings: session and code lifetimes, locking after failed logins.
    logins: LoginRules = DEFAULT_LOGIN_RULES

    def __post_init__(self) -> None:
        if not is_node_id(self.node_id):
            raise ValueError("a node id is the district's 6-digit administrative division code")
        if self.city_key and len(self.city_key) != PUBLIC_KEY_LEN:
            raise ValueError(f"the city key is a {PUBLIC_KEY_LEN}-byte Ed25519 public key")


@dataclass(frozen=True, slots=True)
class Tx:
    """What a use-case sees: its transaction's repository, the rules in force at its
    time (``node.usecases.policies``), and the time."""

    repo: Repo
    policy: Policy
    now: datetime
    node: NodeIdentity

    def local_date(self, at: datetime) -> date:
        return at.astimezone(CITY_TZ).date()


def check_idempotency_key(key: str) -> None:
    if not key:
        raise InvalidArgument("this call needs an idempotency_key (for example a UUID), so that "
                              "a retry cannot do the work twice", "MISSING_IDEMPOTENCY_KEY")
    if len(key) > MAX_IDEMPOTENCY_KEY or not key.isascii() or not key.isprintable():
        raise InvalidArgument(f"an idempotency_key is 1..{MAX_IDEMPOTENCY_KEY} printable ASCII "
                              "characters", "BAD_IDEMPOTENCY_KEY")


class NodeApp:
    """A district node's use-cases over one database, its policies and one clock.

    ``policy``: the node's local policy file, run until a city-signed policy is in force
    (``set_city_policies``); every transaction gets the policy in force at its own time.
    """

    def __init__(self, db: Database, policy: Policy, clock: Clock, node: NodeIdentity) -> None:
        self.db = db
        self.clock = clock
        self.node = node
        # Replaced whole (one reference assignment), never changed: a transaction reads
        # one book, whatever a fetch does meanwhile.
        self.policies = PolicyBook(policy)

    @property
    def policy(self) -> Policy:
        """The policy in force now."""
        return self.policies.at(self._now())

    def set_city_policies(self, book: PolicyBook) -> None:
        """Run ``book``'s city-signed policies from now on, each from its effective time."""
        if book.local is not self.policies.local:
            raise InvariantViolation("a node's local policy does not change while it runs")
        self.policies = book

    def _tx(self, repo: Repo) -> Tx:
        now = self._now()
        return Tx(repo, self.policies.at(now), now, self.node)

    def execute(self, fn: Callable[Concatenate[Tx, P], T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run a use-case in one write transaction: all of it happens, or none."""
        with self.db.write() as conn:
            return fn(self._tx(Repo(conn)), *args, **kwargs)

    def query(self, fn: Callable[Concatenate[Tx, P], T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run a read-only use-case; it never blocks writers."""
        with self.db.read() as conn:
            return fn(self._tx(Repo(conn)), *args, **kwargs)

    def execute_once(
        self,
        key: str,
        method: str,
        fingerprint: bytes,
        fn: Callable[[Tx], T],
        encode: Callable[[T], bytes],
    ) -> bytes:
        """Run ``fn`` at most once per idempotency key; return the encoded first result."""
        check_idempotency_key(key)
        if len(fingerprint) != 32:
            raise InvariantViolation("a request fingerprint is a SHA-256 digest")
        with self.db.write() as conn:
            repo = Repo(conn)
            found = repo.idempotency.get(key)
            if found is not None:
                if (found.method, found.fingerprint) != (method, fingerprint):
                    raise AlreadyExists(
                        f"idempotency key {key!r} was already used for a different request "
                        f"({found.method}); use a new key for a new request",
                        "IDEMPOTENCY_KEY_REUSED")
                return found.response
            tx = self._tx(repo)
            response = encode(fn(tx))
            repo.idempotency.save(key, method, fingerprint, response, tx.now)
            return response

    def _now(self) -> datetime:
        now = self.clock.now()
        if now.tzinfo is None:
            raise InvariantViolation("the clock must give timezone-aware times")
        return now
