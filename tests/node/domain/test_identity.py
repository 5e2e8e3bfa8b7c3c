"""ID card numbers (GB 11643), unified social credit codes (GB 32100) and PersonRef."""

from __future__ import annotations

from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st

from node.domain.identity import (
    MIN_SECRET_BYTES,
    IdCard,
    credit_code_with_check,
    id_card_with_check_digit,
    parse_credit_code,
    parse_id_card,
    person_ref,
)
from runtime.errors import InvalidArgument

SECRET = b"k" * MIN_SECRET_BYTES
#: Published sample numbers, checked by hand against the standards' algorithms.
SAMPLE_ID = "11010519491231002X"
SAMPLE_USCC = "91350100M000100Y43"

# ------------------------------------------------------------------ ID card numbers


def test_published_sample_id_card_is_valid() -> None:
    card = parse_id_card(SAMPLE_ID)
    assert card == IdCard(SAMPLE_ID, date(1949, 12, 31))


def test_id_card_is_normalised_lowercase_x_and_spaces() -> None:
    assert parse_id_card(" 110105 19491231 002x\n").number == SAMPLE_ID


@pytest.mark.parametrize("first17", ["32011519400101001", "32011519800229123",
                                     "11010119000101000", "65010120251231999"])
def test_completed_numbers_parse(first17: str) -> None:
    number = id_card_with_check_digit(first17)
    card = parse_id_card(number)
    assert card.number == number
    assert card.birth_date == date(int(first17[6:10]), int(first17[10:12]), int(first17[12:14]))


@pytest.mark.parametrize("raw", [
    "",
    "1101051949123100",  # 16 characters
    "11010519491231002",  # 17: no check digit
    "11010519491231002X1",  # 19
    "110105194912310",  # an old 15-digit number
    "1101051949123100AX",  # a letter among the digits
    "11010519491231002Y",  # a check character that is not 0-9 or X
    "X10105194912310021",  # X in front
    "１１０１０５１９４９１２３１００２X",  # full-width digits are not ASCII
    "11010519491231002-",
    "\u0661" * 17 + "X",  # Arabic-Indic digits are digits but not ASCII
])
def test_malformed_id_numbers_are_refused(raw: str) -> None:
    with pytest.raises(InvalidArgument) as e:
        parse_id_card(raw)
    assert e.value.reason == "MALFORMED_ID_NUMBER"
    assert e.value.status == "INVALID_ARGUMENT"


def test_wrong_check_digit_is_refused() -> None:
    with pytest.raises(InvalidArgument, match="check digit"):
        parse_id_card("110105194912310021")


@pytest.mark.parametrize("first17", [
    "32011519400230001",  # 30 February
    "32011519401301001",  # month 13
    "32011519400100001",  # day 0
    "32011518991231001",  # before 1900
    "32011519010229001",  # 1901 is not a leap year
])
def test_impossible_birth_dates_are_refused(first17: str) -> None:
    with pytest.raises(InvalidArgument, match="birth date"):
        parse_id_card(id_card_with_check_digit(first17))


@given(st.from_regex(r"\A[0-9]{6}(19[0-9]{2}|20[01][0-9])(0[1-9]|1[0-2])(0[1-9]|1[0-9]|2[0-8])"
                     r"[0-9]{3}\Z"))
def test_every_single_character_change_breaks_the_check(first17: str) -> None:
    number = id_card_with_check_digit(first17)
    assert parse_id_card(number).number == number
    for i in range(17):
        for d in "0123456789":
            if d == number[i]:
                continue
            changed = number[:i] + d + number[i + 1:]
            # GB 11643's weights are all non-zero mod 11, so one changed digit always shows.
            with pytest.raises(InvalidArgument):
                parse_id_card(changed)


def test_id_card_with_check_digit_needs_17_digits() -> None:
    for bad in ("", "1234", "1101051949123100X", "110105194912310021"):
        with pytest.raises(ValueError):
            id_card_with_check_digit(bad)


@pytest.mark.parametrize(("born", "day", "age"), [
    (date(1949, 12, 31), date(2026, 12, 30), 76),
    (date(1949, 12, 31), date(2026, 12, 31), 77),
    (date(1960, 2, 29), date(2020, 2, 28), 59),
    (date(1960, 2, 29), date(2020, 2, 29), 60),
    (date(1960, 2, 29), date(2021, 3, 1), 61),
])
def test_age_on_counts_birthdays(born: date, day: date, age: int) -> None:
    assert IdCard("x", born).age_on(day) == age


# ------------------------------------------------------------------ credit codes


def test_published_sample_credit_code_is_valid() -> None:
    assert parse_credit_code(SAMPLE_USCC) == SAMPLE_USCC
    assert parse_credit_code(" 91350100m000100y43 ") == SAMPLE_USCC


@pytest.mark.parametrize("raw", [
    "",
    "91350100M000100Y4",  # 17
    "91350100M000100Y433",  # 19
    "91350100I000100Y43",  # I is never used
    "91350100O000100Y43",  # nor O
    "91350100S000100Y43",  # nor S
    "91350100V000100Y43",  # nor V
    "91350100Z000100Y43",  # nor Z
    "91350100M000100Y4-",
    "９1350100M000100Y43",
])
def test_malformed_credit_codes_are_refused(raw: str) -> None:
    with pytest.raises(InvalidArgument) as e:
        parse_credit_code(raw)
    assert e.value.reason == "MALFORMED_ID_NUMBER"


def test_credit_code_check_character_mismatch_is_refused() -> None:
    with pytest.raises(InvalidArgument, match="check character"):
        parse_credit_code("91350100M000100Y44")


USCC_CHARS = "0123456789ABCDEFGHJKLMNPQRTUWXY"


@given(st.text(alphabet=USCC_CHARS, min_size=17, max_size=17))
def test_credit_code_completion_round_trips_and_detects_one_change(first17: str) -> None:
    code = credit_code_with_check(first17)
    assert len(code) == 18 and code[17] in USCC_CHARS
    assert parse_credit_code(code) == code
    for i in range(17):
        for c in USCC_CHARS:
            if c != code[i]:
                with pytest.raises(InvalidArgument):
                    parse_credit_code(code[:i] + c + code[i + 1:])


# ------------------------------------------------------------------ PersonRef


def test_person_ref_is_stable_hex_sha256() -> None:
    a = person_ref(SECRET, SAMPLE_ID)
    assert a == person_ref(SECRET, SAMPLE_ID)
    assert len(a) == 64 and int(a, 16) >= 0


def test_person_ref_differs_by_secret_and_number() -> None:
    a = person_ref(SECRET, SAMPLE_ID)
    assert a != person_ref(b"j" * MIN_SECRET_BYTES, SAMPLE_ID)
    assert a != person_ref(SECRET, id_card_with_check_digit("32011519400101001"))


def test_person_ref_of_a_group_differs_from_an_individual_with_the_same_number() -> None:
    assert person_ref(SECRET, SAMPLE_USCC, group=True) != person_ref(SECRET, SAMPLE_USCC)
    assert person_ref(SECRET, SAMPLE_USCC, group=True) == person_ref(
        SECRET, SAMPLE_USCC, group=True)


def test_person_ref_refuses_a_short_secret() -> None:
    with pytest.raises(ValueError, match="at least"):
        person_ref(b"short", SAMPLE_ID)


def test_person_ref_does_not_contain_the_number() -> None:
    assert SAMPLE_ID.lower() not in person_ref(SECRET, SAMPLE_ID)
