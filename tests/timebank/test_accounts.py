"""Account codes: each kind's spelling, parsing as the exact inverse of formatting, and a
precise refusal of anything that is not a code."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from timebank.accounts import (
    MAX_CODE_CHARS,
    Account,
    AccountCodeError,
    AccountKind,
    Origin,
    is_person_ref,
    parse_account,
    person_prefix,
)

REF = "0123456789abcdef" * 4

SPELLED = {
    f"person/{REF}/individual": Account(AccountKind.PERSON, Origin.INDIVIDUAL, REF),
    f"person/{REF}/granted": Account(AccountKind.PERSON, Origin.GRANTED, REF),
    "issuance/group": Account(AccountKind.ISSUANCE, Origin.GROUP),
    "consumption": Account(AccountKind.CONSUMPTION),
    "donation_pool": Account(AccountKind.DONATION_POOL, Origin.DONATED),
    "city_grant": Account(AccountKind.CITY_GRANT, Origin.GRANTED),
    "clearing": Account(AccountKind.CLEARING),
}


@pytest.mark.parametrize("code", sorted(SPELLED))
def test_each_kind_is_spelled_and_read_back(code: str) -> None:
    assert SPELLED[code].code == code
    assert parse_account(code) == SPELLED[code]


@given(st.text("0123456789abcdef", min_size=64, max_size=64), st.sampled_from(Origin))
def test_a_persons_code_round_trips(ref: str, origin: Origin) -> None:
    account = Account.of_person(ref, origin)
    assert account.code.startswith(person_prefix(ref)) and len(account.code) <= MAX_CODE_CHARS
    assert parse_account(account.code) == account


@pytest.mark.parametrize("code", [
    "", "person", f"person/{REF}", f"person/{REF}/gift", f"person/{REF.upper()}/individual",
    f"person/{REF[:-1]}/individual", f"person/{REF}/individual/x", "issuance",
    "issuance/donated/x", "issuance/gift", "consumption/individual", "donation_pool/donated",
    "pool", "Consumption", " clearing", "x" * (MAX_CODE_CHARS + 1), None, 7,
])
def test_what_is_not_a_code_is_refused(code: object) -> None:
    with pytest.raises(AccountCodeError, match="not an account code"):
        parse_account(code)


def test_an_account_has_the_parts_its_kind_names() -> None:
    for kind, origin, ref, reason in [
        (AccountKind.PERSON, Origin.INDIVIDUAL, None, "names their PersonRef"),
        (AccountKind.PERSON, None, REF, "carry an origin"),
        (AccountKind.ISSUANCE, None, None, "carry an origin"),
        (AccountKind.DONATION_POOL, Origin.DONATED, REF, "only a person's account"),
        (AccountKind.DONATION_POOL, None, None, "origin is donated, not None"),
        (AccountKind.CITY_GRANT, Origin.DONATED, None, "origin is granted, not donated"),
        (AccountKind.CLEARING, Origin.GRANTED, None, "origin is None, not granted"),
    ]:
        with pytest.raises(AccountCodeError, match=reason):
            Account(kind, origin, ref)
    with pytest.raises(AccountCodeError, match="no such kind"):
        Account("person", Origin.INDIVIDUAL, REF)  # type: ignore[arg-type]


def test_a_person_ref_is_64_lowercase_hex() -> None:
    assert is_person_ref(REF)
    assert not any(is_person_ref(x) for x in (REF.upper(), REF[:-1], REF + "0", None, 5))
