"""The city policy's format: a TOML document the bureau publishes, not code.

Every rule a city may set differently (rounding, caps, publicity period, who may
redeem, categories) lives here with Nanjing's published values as defaults. This is the
contract's one copy of how a policy is read, checked and named (its digest): the
clearinghouse validates a policy with it before the city signs it into force
(``timebank.citypolicy``), and every node runs what it parses, so a text the
clearinghouse took is a text every node runs. Pure: no files are read here.

The digest is the SHA-256 of the TOML text's UTF-8 bytes, exactly as published: two
texts that differ in a comment are two policies, because the digest is what nodes and
the clearinghouse compare (ADR 0010: nothing under a signature is re-encoded).
"""

from __future__ import annotations

import hashlib
import tomllib
from dataclasses import dataclass, field
from enum import StrEnum

from timebank.minutes import MAX_CAP_MINUTES, MINUTES_PER_DAY, hours


class Relation(StrEnum):
    """How ``other`` stands to ``person`` in a link."""

    SPOUSE = "spouse"
    PARENT = "parent"
    CHILD = "child"
    SIBLING = "sibling"
    GRANDPARENT = "grandparent"
    GRANDCHILD = "grandchild"
    PROXY = "proxy"  # acts for the person (委托人); not family: cannot spend for them

    @property
    def is_family(self) -> bool:
        return self is not Relation.PROXY

    def inverse(self) -> Relation | None:
        """The relation seen from the other side; None for one-way links."""
        return _INVERSE.get(self)


_INVERSE = {
    Relation.SPOUSE: Relation.SPOUSE,
    Relation.PARENT: Relation.CHILD,
    Relation.CHILD: Relation.PARENT,
    Relation.SIBLING: Relation.SIBLING,
    Relation.GRANDPARENT: Relation.GRANDCHILD,
    Relation.GRANDCHILD: Relation.GRANDPARENT,
}


@dataclass(frozen=True, slots=True)
class Category:
    code: str  # ascii, stable: "cleaning"
    name: str  # shown to people: "助洁"


DEFAULT_CATEGORIES = (
    Category("cleaning", "助洁"),
    Category("meals", "助餐"),
    Category("bathing", "助浴"),
    Category("medical", "助医"),
    Category("mobility", "助行"),
    Category("companionship", "助聊"),
    Category("recreation", "助乐"),
    Category("safety", "助安"),
    Category("teaching", "助学"),
    Category("emergency", "助急"),
    Category("shopping", "代购陪购"),
    Category("health", "健康指导"),
    Category("linking", "资源链接"),
)

#: The longest policy text, in UTF-8 bytes: a city-signed policy travels in one envelope
#: body (at most 64 KiB with its other fields), and the published one is under 2 KiB.
MAX_POLICY_BYTES = 32 * 1024
#: Hard limits no policy may exceed. The stored-hours cap's, ``MAX_CAP_MINUTES``, is in the
#: contract (``timebank.minutes``): the clearinghouse bounds a moved balance by it too.
MAX_ORDER_MINUTES = MINUTES_PER_DAY
MAX_CATEGORIES = 64


class PolicyError(ValueError):
    """The policy text is not usable; the message says which setting and why."""


class OnDefault(StrEnum):
    """What the city does, decided ahead of time, when a district does not settle the
    net debit of a final statement (``timebank.settlement``)."""

    CARRY = "carry"  # its debit carries into the next period, disputed
    RESERVE = "reserve"  # the city reserve pays it (as Nanjing's fund guarantees)


class Schedule(StrEnum):
    """When the clearinghouse closes settlement periods by itself."""

    MANUAL = "manual"  # only when the bureau runs `timebank clearinghouse settle`
    MONTHLY = "monthly"  # each calendar month (city time), ``close_after_days`` into the next


#: The highest money rate a policy may set: 10,000 yuan an hour, far above any real one.
MAX_RATE_FEN_PER_HOUR = 1_000_000


@dataclass(frozen=True, slots=True)
class SettlementRules:
    """The ``[settlement]`` table: the fund's rate in integer fen (0.01 yuan) per hour of
    service (0: the statement carries no money), what happens when a district does not
    settle, and when periods close by themselves."""

    rate_fen_per_hour: int = 0
    on_default: OnDefault = OnDefault.CARRY
    schedule: Schedule = Schedule.MANUAL
    close_after_days: int = 3  # monthly: the day of the next month closing may start

    def __post_init__(self) -> None:
        if not 0 <= self.rate_fen_per_hour <= MAX_RATE_FEN_PER_HOUR:
            raise PolicyError(f"settlement.rate_fen_per_hour must be 0..{MAX_RATE_FEN_PER_HOUR}")
        if not 1 <= self.close_after_days <= 28:
            raise PolicyError("settlement.close_after_days must be 1..28")


def policy_sha256(text: str) -> bytes:
    """The policy's digest: SHA-256 of its text's UTF-8 bytes, as published."""
    return hashlib.sha256(text.encode("utf-8")).digest()


def short_digest(digest: bytes | str) -> str:
    """The first 12 hex digits of a digest, as operators read it (bytes or hex); "none"
    for an empty one."""
    text = digest.hex() if isinstance(digest, bytes) else digest
    return text[:12] if text else "none"


@dataclass(frozen=True, slots=True)
class Policy:
    rounding_unit_minutes: int = 15
    cap_minutes: int = hours(1500)
    daily_cap_minutes: int = 0  # 0: no daily cap
    publicity_days: int = 7
    group_hours_donate_only: bool = True
    own_min_age: int = 60
    relative_min_age: int = 60
    relative_kinds: frozenset[Relation] = frozenset(
        {Relation.SPOUSE, Relation.PARENT, Relation.CHILD, Relation.GRANDPARENT,
         Relation.GRANDCHILD, Relation.SIBLING}
    )
    #: Donated minutes serve priority elders first: others may only draw what is above this.
    donation_priority_reserve_minutes: int = hours(100)
    #: How far the city fund may be drawn on this node (grants plus services it pays).
    grant_budget_minutes: int = hours(100_000)
    max_order_minutes: int = MAX_ORDER_MINUTES
    categories: tuple[Category, ...] = DEFAULT_CATEGORIES
    settlement: SettlementRules = SettlementRules()
    source_toml: str = ""
    digest: str = field(default="")

    def __post_init__(self) -> None:
        checks = [
            (1 <= self.rounding_unit_minutes <= 240, "rounding_unit_minutes must be 1..240"),
            (0 < self.cap_minutes <= MAX_CAP_MINUTES, "cap_hours must be 1..100000"),
            (0 <= self.daily_cap_minutes <= MINUTES_PER_DAY, "daily_cap_minutes must be 0..1440"),
            (0 <= self.publicity_days <= 90, "publicity_days must be 0..90"),
            (0 <= self.own_min_age <= 150, "own_min_age must be 0..150"),
            (0 <= self.relative_min_age <= 150, "relative_min_age must be 0..150"),
            (0 <= self.donation_priority_reserve_minutes <= MAX_CAP_MINUTES * 1000,
             "donation_priority_reserve_hours is out of range"),
            (0 <= self.grant_budget_minutes <= MAX_CAP_MINUTES * 1000,
             "grant_budget_hours is out of range"),
            (1 <= self.max_order_minutes <= MAX_ORDER_MINUTES, "max_order_minutes must be 1..1440"),
            (1 <= len(self.categories) <= MAX_CATEGORIES, "categories: between 1 and 64"),
            (Relation.PROXY not in self.relative_kinds, "a proxy is not a relative"),
            (len({c.code for c in self.categories}) == len(self.categories),
             "category codes must be unique"),
        ]
        for ok, message in checks:
            if not ok:
                raise PolicyError(message)
        for c in self.categories:
            if not (c.code.isascii() and c.code.replace("_", "").isalnum() and c.name.strip()):
                raise PolicyError(
                    f"category {c.code!r}: code must be ascii letters, name non-empty")

    @property
    def sha256(self) -> bytes:
        """The digest as the 32 bytes that claim messages and checkpoints carry."""
        return bytes.fromhex(self.digest)

    def category(self, code_or_name: str) -> Category | None:
        for c in self.categories:
            if code_or_name in (c.code, c.name):
                return c
        return None


_KNOWN_KEYS = {
    "rounding_unit_minutes", "cap_hours", "daily_cap_minutes", "publicity_days",
    "group_hours_donate_only", "donation_priority_reserve_hours", "grant_budget_hours",
    "max_order_minutes", "redeem", "categories", "settlement",
}


def load_policy(text: str) -> Policy:
    """Parse a policy TOML document; unknown or ill-typed settings are errors, not ignored."""
    if not isinstance(text, str):
        raise PolicyError("a policy is TOML text")
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise PolicyError("a policy is UTF-8 text") from None
    if size > MAX_POLICY_BYTES:
        raise PolicyError(f"a policy is at most {MAX_POLICY_BYTES} bytes of TOML")
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise PolicyError(f"the policy file is not valid TOML: {e}") from None
    unknown = set(doc) - _KNOWN_KEYS
    if unknown:
        raise PolicyError(f"unknown policy settings: {', '.join(sorted(unknown))}")

    def integer(key: str, default: int, table: dict[str, object] = doc) -> int:
        value = table.get(key, default)
        if not isinstance(value, int) or isinstance(value, bool):
            raise PolicyError(f"{key} must be a whole number")
        return value

    redeem = doc.get("redeem", {})
    if not isinstance(redeem, dict):
        raise PolicyError("[redeem] must be a table")
    unknown_redeem = set(redeem) - {"own_min_age", "relative_min_age", "relatives"}
    if unknown_redeem:
        raise PolicyError(f"unknown [redeem] settings: {', '.join(sorted(unknown_redeem))}")
    kinds_raw = redeem.get("relatives", [r.value for r in Policy().relative_kinds])
    try:
        kinds = frozenset(Relation(k) for k in kinds_raw)
    except (ValueError, TypeError):
        raise PolicyError(
            "redeem.relatives lists relations from: "
            + ", ".join(r.value for r in Relation if r.is_family)
        ) from None
    categories: tuple[Category, ...] = DEFAULT_CATEGORIES
    if "categories" in doc:
        raw = doc["categories"]
        if not isinstance(raw, list) or not all(
            isinstance(c, dict)
            and isinstance(c.get("code"), str)
            and isinstance(c.get("name"), str)
            for c in raw
        ):
            raise PolicyError('categories is a list of {code = "...", name = "..."}')
        extra = sorted({k for c in raw for k in c} - {"code", "name"})
        if extra:
            raise PolicyError(f"unknown category settings: {', '.join(extra)}")
        categories = tuple(Category(c["code"], c["name"]) for c in raw)
    settlement = _settlement_rules(doc.get("settlement", {}))
    donate_only = doc.get("group_hours_donate_only", True)
    if not isinstance(donate_only, bool):
        raise PolicyError("group_hours_donate_only must be true or false")
    defaults = Policy()
    return Policy(
        rounding_unit_minutes=integer("rounding_unit_minutes", defaults.rounding_unit_minutes),
        cap_minutes=hours(integer("cap_hours", 1500)),
        daily_cap_minutes=integer("daily_cap_minutes", 0),
        publicity_days=integer("publicity_days", defaults.publicity_days),
        group_hours_donate_only=donate_only,
        own_min_age=integer("own_min_age", defaults.own_min_age, redeem),
        relative_min_age=integer("relative_min_age", defaults.relative_min_age, redeem),
        relative_kinds=kinds,
        donation_priority_reserve_minutes=hours(integer("donation_priority_reserve_hours", 100)),
        grant_budget_minutes=hours(integer("grant_budget_hours", 100_000)),
        max_order_minutes=integer("max_order_minutes", MAX_ORDER_MINUTES),
        categories=categories,
        settlement=settlement,
        source_toml=text,
        digest=policy_sha256(text).hex(),
    )


def _settlement_rules(table: object) -> SettlementRules:
    if not isinstance(table, dict):
        raise PolicyError("[settlement] must be a table")
    unknown = set(table) - {"rate_fen_per_hour", "on_default", "schedule", "close_after_days"}
    if unknown:
        raise PolicyError(f"unknown [settlement] settings: {', '.join(sorted(unknown))}")
    rate = table.get("rate_fen_per_hour", 0)
    days = table.get("close_after_days", 3)
    for key, value in (("rate_fen_per_hour", rate), ("close_after_days", days)):
        if not isinstance(value, int) or isinstance(value, bool):
            raise PolicyError(f"settlement.{key} must be a whole number")
    try:
        on_default = OnDefault(table.get("on_default", OnDefault.CARRY.value))
    except ValueError:
        raise PolicyError('settlement.on_default is "carry" or "reserve"') from None
    try:
        schedule = Schedule(table.get("schedule", Schedule.MANUAL.value))
    except ValueError:
        raise PolicyError('settlement.schedule is "manual" or "monthly"') from None
    return SettlementRules(rate, on_default, schedule, days)


DEFAULT_POLICY_TOML = """\
# City time-bank policy (published by the city civil-affairs bureau).
# Amounts of stored time are whole hours; durations of service are minutes.
rounding_unit_minutes = 15          # service time is rounded once, when recorded
cap_hours = 1500                    # per person; the excess goes to the donation pool
daily_cap_minutes = 0               # 0: none; over it, time is recorded but not banked
publicity_days = 7                  # 公示期 before an order's hours are recorded
group_hours_donate_only = true      # 团体志愿者 hours may only be donated
donation_priority_reserve_hours = 100  # donated hours below this serve priority elders only
grant_budget_hours = 100000         # how far the city fund may be drawn on this node
max_order_minutes = 1440
categories = [
  { code = "cleaning", name = "助洁" },
  { code = "meals", name = "助餐" },
  { code = "bathing", name = "助浴" },
  { code = "medical", name = "助医" },
  { code = "mobility", name = "助行" },
  { code = "companionship", name = "助聊" },
  { code = "recreation", name = "助乐" },
  { code = "safety", name = "助安" },
  { code = "teaching", name = "助学" },
  { code = "emergency", name = "助急" },
  { code = "shopping", name = "代购陪购" },
  { code = "health", name = "健康指导" },
  { code = "linking", name = "资源链接" },
]

[redeem]
own_min_age = 60                    # who may spend their own hours
relative_min_age = 60               # a relative served with your hours must be this old
relatives = ["spouse", "parent", "child", "grandparent", "grandchild", "sibling"]
"""
