"""The console's message catalogue: whole in both languages, and every key a page uses."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from importlib import resources

import pytest

from web.catalogue import (
    Catalogue,
    CatalogueError,
    Language,
    choose_language,
    date_text,
    datetime_text,
    fields_of,
    minutes_text,
    packaged,
)

#: ``t('key'`` in a template: the keys the pages ask for by name.
_USED = re.compile(r"""\bt\(\s*['"]([a-z_][a-z0-9_]*)['"]\s*[,)]""")


def _templates() -> dict[str, str]:
    folder = resources.files("web").joinpath("templates")
    return {p.name: p.read_text(encoding="utf-8") for p in folder.iterdir()
            if p.name.endswith(".html")}


def test_the_packaged_catalogue_is_whole() -> None:
    catalogue = packaged()
    assert len(catalogue.messages) > 30
    for key, texts in catalogue.messages.items():
        assert set(texts) == set(Language), key
        assert fields_of(texts[Language.ZH]) == fields_of(texts[Language.EN]), key


def test_every_key_a_template_uses_is_in_the_catalogue() -> None:
    used = {key for text in _templates().values() for key in _USED.findall(text)}
    assert used, "the scan found no keys: has the templates' call changed?"
    missing = used - set(packaged().messages)
    assert not missing, f"templates use keys the catalogue lacks: {sorted(missing)}"


def test_no_template_says_a_word_of_its_own() -> None:
    """Every word a page shows comes through the catalogue: with the template's tags,
    expressions and markup taken away, no letter (of any script) is left."""
    for name, text in _templates().items():
        bare = re.sub(r"\{[{%#].*?[}%#]\}", " ", text, flags=re.S)
        bare = re.sub(r"<!doctype html>|<[^>]*>", " ", bare, flags=re.S | re.I)
        words = [w for w in re.findall(r"\w+", bare) if not w.isdigit()]
        assert not words, f"{name} says {words} outside the catalogue"


def test_every_key_the_pages_choose_at_run_time_is_in_the_catalogue() -> None:
    from city.reports.tables import SIGNOFF_STATUSES
    from web import bureau, desk, history, member, nodes, settlements

    chosen = ({f"state_{s}" for s in desk.ORDER_STATES.values()}
              | set(desk.ORIGINS.values()) | {label for _, label in desk.PAYMENTS.values()}
              | {"volunteer_none", "volunteer_several", "request_bad_minutes",
                 "action_refused", "login_failed", "login_missing", "error_signed_out"}
              | {f.value for f in nodes.Failure}
              | history.KIND_KEYS
              | {f"claim_state_{s}" for s in (*bureau.CLAIM_STATES, *desk.CLAIM_STATES)}
              | {f"settle_status_{s}" for s in SIGNOFF_STATUSES}
              | {f"settle_format_{f.replace('.', '_')}" for f in settlements.FORMATS}
              | {"settle_close_bad_period", "settle_close_bad_reason",
                 "settle_close_refused"}
              | {f"log_alarm_{k}" for k in ("fork", "finality", "other")}
              | set(member.CONSENT_STATES.values())
              | {"consent_granted", "consent_revoked", "consent_bad_minutes"}
              | {f"{who}_{why}" for who in ("volunteer", "payer")
                 for why in ("none", "several")}
              | {f"ago_{unit}" for unit in ("seconds", "minutes", "hours", "days")})
    missing = chosen - set(packaged().messages)
    assert not missing, sorted(missing)


def test_the_chinese_text_is_chinese_and_the_english_is_not() -> None:
    for key, texts in packaged().messages.items():
        if key == "language_switch":  # names the other language, in that language
            continue
        assert re.search(r"[\u4e00-\u9fff]", texts[Language.ZH]), key
        assert not re.search(r"[\u4e00-\u9fff]", texts[Language.EN]), key


@pytest.mark.parametrize(("toml", "problem"), [
    ('[a]\nzh = "一"\n', "lacks en"),
    ('[a]\nzh = "{x}个"\nen = "{y} of them"\n', "other fields"),
    ('[a]\nzh = "一"\nen = "one"\nfr = "un"\n', "table of zh and en"),
    ('[a]\nzh = ""\nen = "one"\n', "empty"),
    ('[a]\nzh = "{一"\nen = "one"\n', "braces"),
    ('[9a]\nzh = "一"\nen = "one"\n', "identifier"),
    ("not toml at all", "not TOML"),
])
def test_a_catalogue_that_is_not_whole_is_refused(toml: str, problem: str) -> None:
    with pytest.raises(CatalogueError, match=problem):
        Catalogue.parse(toml)


def test_a_message_takes_exactly_its_fields() -> None:
    catalogue = Catalogue.parse('[n]\nzh = "共 {count} 项"\nen = "{count} in all"\n')
    assert catalogue.text("n", Language.ZH, count=3) == "共 3 项"
    assert catalogue.text("n", Language.EN, count=3) == "3 in all"
    with pytest.raises(CatalogueError, match="fills in"):
        catalogue.text("n", Language.EN)
    with pytest.raises(CatalogueError, match="no message"):
        catalogue.text("missing", Language.EN)


@pytest.mark.parametrize(("minutes", "zh", "en"), [
    (0, "0分钟", "0 min"), (45, "45分钟", "45 min"), (60, "1小时", "1 h"),
    (90, "1小时30分钟", "1 h 30 min"), (1500, "25小时", "25 h"),
])
def test_minutes_are_said_in_hours_and_minutes(minutes: int, zh: str, en: str) -> None:
    assert minutes_text(minutes, Language.ZH, packaged()) == zh
    assert minutes_text(minutes, Language.EN, packaged()) == en


def test_dates_are_the_citys_whatever_the_servers_zone() -> None:
    late = datetime(2026, 12, 6, 17, 30, tzinfo=UTC)  # 01:30 on the 7th in Shanghai
    assert date_text(late, Language.ZH) == "2026年12月7日"
    assert date_text(late, Language.EN) == "7 Dec 2026"
    assert datetime_text(late, Language.ZH) == "2026年12月7日 01:30"
    assert datetime_text(late, Language.EN) == "7 Dec 2026, 01:30"
    with pytest.raises(CatalogueError, match="zone"):
        date_text(datetime(2026, 12, 7), Language.ZH)


@pytest.mark.parametrize(("asked", "remembered", "accept", "expected"), [
    (None, None, None, Language.ZH),
    (None, None, "en-GB,en;q=0.9", Language.EN),
    (None, None, "fr-FR, zh-TW;q=0.8, en;q=0.5", Language.ZH),
    (None, "en", "zh-CN", Language.EN),
    ("zh-CN", "en", "en", Language.ZH),
    ("xx", None, "en", Language.EN),
    (None, None, "x" * 5000, Language.ZH),
])
def test_the_language_asked_for_then_remembered_then_the_browsers(
        asked: str | None, remembered: str | None, accept: str | None,
        expected: Language) -> None:
    assert choose_language(asked, remembered, accept) is expected


def test_a_category_is_the_citys_name_in_chinese_and_words_in_english() -> None:
    from timebank.policy import DEFAULT_CATEGORIES
    from web.catalogue import category_text

    catalogue = packaged()
    for c in DEFAULT_CATEGORIES:  # every standard category has English words
        assert category_text(c.code, c.name, Language.ZH, catalogue) == c.name
        english = category_text(c.code, c.name, Language.EN, catalogue)
        assert english and english.isascii(), c
    assert category_text("meals", "老年助餐", Language.ZH, catalogue) == "老年助餐"
    assert category_text("meals", "老年助餐", Language.EN, catalogue) == "Meals"
    assert category_text("gardening", "园艺", Language.EN, catalogue) == "园艺 (gardening)"
    assert category_text("x-y", "", Language.EN, catalogue) == "x-y"
