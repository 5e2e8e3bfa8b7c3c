"""The console's one message catalogue, and the way a page says a number or a date.

Every word a page shows comes from ``messages.toml``, in Chinese (zh-CN, the default:
staff and members are Chinese-speaking, many of them elderly) and in English. A
catalogue is checked whole when it is read: both languages for every key, the same
``{fields}`` in both, nothing over ``MAX_MESSAGE_CHARS``. So a page can never show a key
in place of a sentence, or a sentence in one language only.

Dates and times are the city's (Asia/Shanghai), whatever the server's zone; minutes are
said in hours and minutes. Pure: the packaged file is read once, by ``packaged()``.
"""

from __future__ import annotations

import functools
import string
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from importlib import resources
from zoneinfo import ZoneInfo

#: The city's clock, in which every date and time is shown.
CITY_TIME = ZoneInfo("Asia/Shanghai")
#: The longest message; the longest key.
MAX_MESSAGE_CHARS = 1000
MAX_KEY_CHARS = 64
#: The most keys a catalogue holds (a bound, not a target).
MAX_MESSAGES = 2000
_EN_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct",
              "Nov", "Dec")


class Language(StrEnum):
    """A language the console speaks, by its BCP 47 tag (the page's ``lang``)."""

    ZH = "zh-CN"
    EN = "en"


DEFAULT_LANGUAGE = Language.ZH


class CatalogueError(ValueError):
    """A catalogue that is not whole, or a message asked for wrongly (a bug, not input)."""


def fields_of(template: str) -> frozenset[str]:
    """The ``{names}`` a message fills in."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as e:
        raise CatalogueError(f"a message's braces do not match: {template!r}") from e
    return frozenset(name for _, name, _, _ in parsed if name is not None)


@dataclass(frozen=True, slots=True)
class Catalogue:
    """Every message, by key, in every language."""

    messages: Mapping[str, Mapping[Language, str]]

    def __post_init__(self) -> None:
        if len(self.messages) > MAX_MESSAGES:
            raise CatalogueError(f"more than {MAX_MESSAGES} messages")
        for key, texts in self.messages.items():
            if not key or len(key) > MAX_KEY_CHARS or not key.isidentifier():
                raise CatalogueError(f"a key is a short identifier, not {key!r}")
            if set(texts) != set(Language):
                missing = ", ".join(sorted(set(Language) - set(texts)))
                raise CatalogueError(f"message {key!r} lacks {missing}")
            fields = {lang: fields_of(text) for lang, text in texts.items()}
            if len(set(fields.values())) != 1:
                raise CatalogueError(f"message {key!r} fills in other fields in each "
                                     f"language: {fields}")
            for lang, text in texts.items():
                if not text.strip() or len(text) > MAX_MESSAGE_CHARS:
                    raise CatalogueError(f"message {key!r} in {lang} is empty or too long")

    @classmethod
    def parse(cls, text: str) -> Catalogue:
        """A catalogue from TOML: a table per key with ``zh`` and ``en`` strings."""
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise CatalogueError(f"the catalogue is not TOML: {e}") from e
        codes = {"zh": Language.ZH, "en": Language.EN}
        messages: dict[str, dict[Language, str]] = {}
        for key, texts in data.items():
            if not isinstance(texts, dict) or set(texts) - set(codes) or not all(
                    isinstance(t, str) for t in texts.values()):
                raise CatalogueError(f"message {key!r} is a table of zh and en strings")
            messages[key] = {codes[code]: t for code, t in texts.items()}
        return cls(messages)

    def text(self, key: str, language: Language, **fields: object) -> str:
        """The message ``key`` in ``language``, its fields filled in."""
        texts = self.messages.get(key)
        if texts is None:
            raise CatalogueError(f"no message {key!r} in the catalogue")
        template = texts[language]
        wanted = fields_of(template)
        if wanted != set(fields):
            raise CatalogueError(f"message {key!r} fills in {sorted(wanted)}, "
                                 f"given {sorted(fields)}")
        return template.format(**fields) if wanted else template


def category_text(code: str, name: str, language: Language, catalogue: Catalogue) -> str:
    """A service category as a page says it: in Chinese, the name the city's policy gives
    it (the node sends it); in English, the catalogue's words for the policy's standard
    categories (``category_<code>``), else the policy's own name and its code."""
    if language is Language.EN:
        key = f"category_{code}"
        if key.isidentifier() and key in catalogue.messages:
            return catalogue.text(key, language)
        return f"{name} ({code})" if name and code else name or code
    return name or code


@functools.cache
def packaged() -> Catalogue:
    """The catalogue shipped with the console."""
    text = resources.files("web").joinpath("messages.toml").read_text(encoding="utf-8")
    return Catalogue.parse(text)


def choose_language(asked: str | None, remembered: str | None,
                    accept_language: str | None) -> Language:
    """The page's language: the one asked for in the address, else the one remembered
    from the last choice, else the browser's first that the console speaks, else
    Chinese."""
    for tag in (asked, remembered):
        found = _language(tag)
        if found is not None:
            return found
    for part in (accept_language or "")[:200].split(","):
        found = _language(part.split(";")[0])
        if found is not None:
            return found
    return DEFAULT_LANGUAGE


def _language(tag: str | None) -> Language | None:
    tag = (tag or "").strip().lower()
    if tag.startswith("zh"):
        return Language.ZH
    if tag.startswith("en"):
        return Language.EN
    return None


def minutes_text(minutes: int, language: Language, catalogue: Catalogue) -> str:
    """Minutes as a person says them: 90 → "1小时30分钟" / "1 h 30 min"."""
    if minutes < 0:
        raise CatalogueError("a length of time is not negative")
    hours, rest = divmod(minutes, 60)
    if hours and rest:
        return catalogue.text("minutes_hours_minutes", language, hours=hours, minutes=rest)
    if hours:
        return catalogue.text("minutes_hours", language, hours=hours)
    return catalogue.text("minutes_only", language, minutes=rest)


def date_text(at: datetime, language: Language) -> str:
    """The day ``at`` falls on in the city: "2026年12月7日" / "7 Dec 2026"."""
    local = _city(at)
    if language is Language.ZH:
        return f"{local.year}年{local.month}月{local.day}日"
    return f"{local.day} {_EN_MONTHS[local.month - 1]} {local.year}"


def datetime_text(at: datetime, language: Language) -> str:
    """``at`` on the city's clock: "2026年12月7日 14:05" / "7 Dec 2026, 14:05"."""
    local = _city(at)
    separator = " " if language is Language.ZH else ", "
    return f"{date_text(local, language)}{separator}{local:%H:%M}"


def _city(at: datetime) -> datetime:
    if at.tzinfo is None:
        raise CatalogueError("a time to show must say its zone")
    return at.astimezone(CITY_TIME)
