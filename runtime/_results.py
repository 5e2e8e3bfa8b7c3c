"""What a statement run through ``runtime.statements`` gives back, in either mode.

Both implementations hand the caller the same types: a :class:`Result` holding every row
already read, each row a :class:`Row` (a tuple whose values are also attributes named by
their columns). Core's own ``CursorResult`` and ``Row`` would do for the Core path, but
then code written against one mode could lean on something the other lacks.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import MultipleResultsFound, NoResultFound


class Row(tuple):  # type: ignore[type-arg]
    """A result row: a tuple whose values are also attributes named by their columns."""

    __slots__ = ()
    _fields: tuple[str, ...] = ()

    @property
    def _mapping(self) -> dict[str, Any]:
        return dict(zip(self._fields, self, strict=True))

    if TYPE_CHECKING:
        def __getattr__(self, name: str) -> Any: ...  # the columns, made per statement


@lru_cache(maxsize=1024)  # one per shape of result: bounded by the code, not the data
def row_type(fields: tuple[str, ...]) -> type[Row]:
    """The Row subclass whose attributes are ``fields`` (names a Python attribute can
    take; any other stays readable by index and ``_mapping``)."""
    attrs: dict[str, Any] = {"__slots__": (), "_fields": fields}
    for i, name in enumerate(fields):
        if name.isidentifier() and not name.startswith("_"):
            attrs[name] = property(lambda row, i=i: row[i])  # type: ignore[misc]
    return type("Row", (Row,), attrs)


class Result:
    """The rows a statement returned, read once, and its row count."""

    __slots__ = ("_rows", "rowcount")

    def __init__(self, rows: list[Row], rowcount: int) -> None:
        self._rows = rows
        self.rowcount = rowcount

    def __iter__(self) -> Iterator[Row]:
        return iter(self._rows)

    def all(self) -> list[Row]:
        return self._rows

    def first(self) -> Row | None:
        return self._rows[0] if self._rows else None

    def one(self) -> Row:
        """The only row, else Core's own NoResultFound or MultipleResultsFound."""
        if not self._rows:
            raise NoResultFound("No row was found when one was required")
        if len(self._rows) > 1:
            raise MultipleResultsFound("Multiple rows were found when exactly one was "
                                       "required")
        return self._rows[0]

    def scalar(self) -> Any:
        return self._rows[0][0] if self._rows else None

    def scalar_one(self) -> Any:
        return self.one()[0]

    def scalars(self) -> list[Any]:
        return [row[0] for row in self._rows]
