"""Identity numbers and the city-wide PersonRef pseudonym.

An individual is known by the 18-character resident ID card number (GB 11643),
a group volunteer by its unified social credit code (GB 32100). Both stay on the
person's home node; only the PersonRef, HMAC-SHA256 under the city secret, leaves.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import date

from runtime.errors import InvalidArgument

_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"
_USCC_CHARS = "0123456789ABCDEFGHJKLMNPQRTUWXY"
_USCC_WEIGHTS = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)
MIN_SECRET_BYTES = 32


@dataclass(frozen=True, slots=True)
class IdCard:
    number: str  # normalised: 17 digits and a check character 0-9 or X
    birth_date: date

    def age_on(self, day: date) -> int:
        before_birthday = (day.month, day.day) < (self.birth_date.month, self.birth_date.day)
        return day.year - self.birth_date.year - int(before_birthday)


def _strip(raw: str) -> str:
    return "".join(raw.split()).upper()


def parse_id_card(raw: str) -> IdCard:
    """Validate and normalise a resident ID card number, or raise InvalidArgument."""
    number = _strip(raw)
    if len(number) != 18 or not number[:17].isdigit() or not number[:17].isascii():
        raise InvalidArgument(
            "an ID card number has 18 characters: 17 digits and a check digit (0-9 or X)",
            "MALFORMED_ID_NUMBER",
        )
    check = _ID_CHECK[sum(int(c) * w for c, w in zip(number, _ID_WEIGHTS, strict=False)) % 11]
    if number[17] != check:
        raise InvalidArgument(
            "the ID card number's check digit does not match; please re-read the card",
            "MALFORMED_ID_NUMBER",
        )
    try:
        born = date(int(number[6:10]), int(number[10:12]), int(number[12:14]))
    except ValueError:
        raise InvalidArgument(
            "the ID card number holds no valid birth date", "MALFORMED_ID_NUMBER"
        ) from None
    if born.year < 1900:
        raise InvalidArgument(
            "the ID card number holds no valid birth date", "MALFORMED_ID_NUMBER"
        )
    return IdCard(number=number, birth_date=born)


def parse_credit_code(raw: str) -> str:
    """Validate and normalise a unified social credit code, or raise InvalidArgument."""
    code = _strip(raw)
    if len(code) != 18 or any(c not in _USCC_CHARS for c in code):
        raise InvalidArgument(
            "a group's unified social credit code has 18 characters (digits and capital "
            "letters, no I, O, S, V or Z)",
            "MALFORMED_ID_NUMBER",
        )
    total = sum(_USCC_CHARS.index(c) * w for c, w in zip(code, _USCC_WEIGHTS, strict=False))
    check = _USCC_CHARS[(31 - total % 31) % 31]
    if code[17] != check:
        raise InvalidArgument(
            "the unified social credit code's check character does not match",
            "MALFORMED_ID_NUMBER",
        )
    return code


def person_ref(city_secret: bytes, normalised_id: str, *, group: bool = False) -> str:
    """The city-wide pseudonym: HMAC-SHA256(city secret, normalised number), hex."""
    if len(city_secret) < MIN_SECRET_BYTES:
        raise ValueError(f"the city secret must be at least {MIN_SECRET_BYTES} bytes")
    message = ("group:" + normalised_id) if group else normalised_id
    return hmac.new(city_secret, message.encode("ascii"), hashlib.sha256).hexdigest()


def id_card_with_check_digit(first17: str) -> str:
    """Complete 17 digits with their check digit (for tests, the demo and staff tools)."""
    if len(first17) != 17 or not first17.isdigit():
        raise ValueError("need exactly 17 digits")
    total = sum(int(c) * w for c, w in zip(first17, _ID_WEIGHTS, strict=True))
    return first17 + _ID_CHECK[total % 11]


def credit_code_with_check(first17: str) -> str:
    """Complete 17 credit-code characters with their check character."""
    total = sum(_USCC_CHARS.index(c) * w for c, w in zip(first17, _USCC_WEIGHTS, strict=False))
    return first17 + _USCC_CHARS[(31 - total % 31) % 31]
