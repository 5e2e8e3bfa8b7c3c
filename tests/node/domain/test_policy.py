"""City policy as data: Nanjing's defaults, custom settings, and refusal of bad files."""

from __future__ import annotations

import dataclasses

import pytest

from node.domain.policy import (
    DEFAULT_CATEGORIES,
    DEFAULT_POLICY_TOML,
    Category,
    Policy,
    PolicyError,
    Relation,
    load_policy,
)
from timebank.minutes import hours


def _settings(p: Policy) -> dict[str, object]:
    d = dataclasses.asdict(p)
    d.pop("source_toml")
    d.pop("digest")
    return d


def test_defaults_are_nanjings() -> None:
    p = Policy()
    assert p.rounding_unit_minutes == 15
    assert p.cap_minutes == hours(1500) == 90_000
    assert p.publicity_days == 7
    assert p.daily_cap_minutes == 0
    assert p.group_hours_donate_only is True
    assert p.own_min_age == 60 and p.relative_min_age == 60
    assert Relation.PROXY not in p.relative_kinds
    assert {c.name for c in p.categories} >= {"助洁", "助餐", "助浴", "助医", "助行", "助聊",
                                              "助乐", "助安", "助学", "助急"}


def test_an_empty_file_means_the_defaults() -> None:
    assert _settings(load_policy("")) == _settings(Policy())


def test_the_published_default_file_equals_the_defaults() -> None:
    p = load_policy(DEFAULT_POLICY_TOML)
    assert _settings(p) == _settings(Policy())
    assert p.source_toml == DEFAULT_POLICY_TOML
    assert len(p.digest) == 64


def test_digest_is_of_the_text() -> None:
    assert load_policy("publicity_days = 7").digest != load_policy("publicity_days=7").digest
    assert load_policy("publicity_days = 7").digest == load_policy("publicity_days = 7").digest


def test_custom_settings() -> None:
    p = load_policy("""
        rounding_unit_minutes = 30
        cap_hours = 600
        daily_cap_minutes = 120
        publicity_days = 3
        group_hours_donate_only = false
        donation_priority_reserve_hours = 5
        grant_budget_hours = 10
        max_order_minutes = 240
        [redeem]
        own_min_age = 65
        relative_min_age = 0
        relatives = ["spouse", "child"]
    """)
    assert p.rounding_unit_minutes == 30
    assert p.cap_minutes == 600 * 60
    assert p.daily_cap_minutes == 120
    assert p.publicity_days == 3
    assert p.group_hours_donate_only is False
    assert p.donation_priority_reserve_minutes == 300
    assert p.grant_budget_minutes == 600
    assert p.max_order_minutes == 240
    assert (p.own_min_age, p.relative_min_age) == (65, 0)
    assert p.relative_kinds == frozenset({Relation.SPOUSE, Relation.CHILD})


def test_custom_categories_replace_the_defaults() -> None:
    p = load_policy("""
        categories = [
          { code = "cleaning", name = "助洁" },
          { code = "merchant_discount", name = "商户折扣" },
        ]
    """)
    assert p.categories == (Category("cleaning", "助洁"), Category("merchant_discount", "商户折扣"))
    assert p.category("merchant_discount") == Category("merchant_discount", "商户折扣")
    assert p.category("商户折扣") == Category("merchant_discount", "商户折扣")
    assert p.category("meals") is None  # a default the city did not keep
    assert Policy().category("助餐") == DEFAULT_CATEGORIES[1]


@pytest.mark.parametrize(("text", "message"), [
    ("rounding_unit = 15", "unknown policy settings: rounding_unit"),
    ("cap = 1500\nfoo = 1", "unknown policy settings: cap, foo"),
    ("[redeem]\nown_age = 60", r"unknown \[redeem\] settings: own_age"),
    ("[redeem]\nrelatives = [\"proxy\"]", "a proxy is not a relative"),
    ("[redeem]\nrelatives = [\"cousin\"]", "redeem.relatives"),
    ("[redeem]\nrelatives = \"spouse\"", "redeem.relatives"),
    ("[redeem]\nrelatives = [1]", "redeem.relatives"),
    ("[redeem]\nrelatives = [{ a = 1 }]", "redeem.relatives"),
    ("redeem = 5", r"\[redeem\] must be a table"),
    ('rounding_unit_minutes = "15"', "rounding_unit_minutes must be a whole number"),
    ("rounding_unit_minutes = 15.0", "rounding_unit_minutes must be a whole number"),
    ("rounding_unit_minutes = true", "rounding_unit_minutes must be a whole number"),
    ("rounding_unit_minutes = 0", "rounding_unit_minutes must be 1..240"),
    ("rounding_unit_minutes = 241", "rounding_unit_minutes must be 1..240"),
    ("cap_hours = 0", "cap_hours"),
    ("cap_hours = -5", "cap_hours"),
    ("cap_hours = 99999999999999999", "cap_hours"),
    ("cap_hours = [1500]", "cap_hours must be a whole number"),
    ("daily_cap_minutes = 1441", "daily_cap_minutes"),
    ("daily_cap_minutes = -1", "daily_cap_minutes"),
    ("publicity_days = -1", "publicity_days"),
    ("publicity_days = 91", "publicity_days"),
    ("publicity_days = 7.5", "publicity_days must be a whole number"),
    ('group_hours_donate_only = "yes"', "group_hours_donate_only must be true or false"),
    ("group_hours_donate_only = 1", "group_hours_donate_only must be true or false"),
    ("donation_priority_reserve_hours = -1", "donation_priority_reserve_hours"),
    ("grant_budget_hours = -1", "grant_budget_hours"),
    ("max_order_minutes = 0", "max_order_minutes"),
    ("max_order_minutes = 1441", "max_order_minutes"),
    ("[redeem]\nown_min_age = 151", "own_min_age"),
    ("[redeem]\nown_min_age = false", "own_min_age must be a whole number"),
    ("[redeem]\nrelative_min_age = -1", "relative_min_age"),
    ("categories = []", "categories"),
    ('categories = "cleaning"', "categories is a list"),
    ("[categories]\ncode = \"x\"", "categories is a list"),
    ('categories = [{ code = "x" }]', "categories is a list"),
    ('categories = [{ code = 1, name = "x" }]', "categories is a list"),
    ('categories = [{ code = "a b", name = "x" }]', "category 'a b'"),
    ('categories = [{ code = "", name = "x" }]', "category ''"),
    ('categories = [{ code = "清洁", name = "x" }]', "category '清洁'"),
    ('categories = [{ code = "x", name = "  " }]', "category 'x'"),
    ('categories = [{ code = "x", name = "A" }, { code = "x", name = "B" }]', "unique"),
    ('categories = [{ code = "x", name = "A", weight = 2 }]', "unknown category settings"),
    ("this is not = = toml", "not valid TOML"),
])
def test_bad_policies_are_refused_with_the_setting_named(text: str, message: str) -> None:
    with pytest.raises(PolicyError, match=message):
        load_policy(text)


def test_too_many_categories_are_refused() -> None:
    many = ", ".join(f'{{ code = "c{i}", name = "类{i}" }}' for i in range(65))
    with pytest.raises(PolicyError, match="categories"):
        load_policy(f"categories = [{many}]")


def test_policy_error_is_a_value_error() -> None:
    assert issubclass(PolicyError, ValueError)


def test_policy_constructor_checks_too() -> None:
    with pytest.raises(PolicyError):
        Policy(rounding_unit_minutes=0)
    with pytest.raises(PolicyError):
        Policy(relative_kinds=frozenset({Relation.PROXY}))


def test_relations_and_their_inverses() -> None:
    assert not Relation.PROXY.is_family
    assert Relation.PROXY.inverse() is None
    for r in Relation:
        if r.is_family:
            inverse = r.inverse()
            assert inverse is not None and inverse.inverse() is r
