"""Help text shown as it is written.

typer reads every help string and docstring as rich markup, where ``[server]`` or
``[clearinghouse]`` is a style tag: ``--help`` silently dropped the very table names an
operator needs ("its address ( listen)"). ``plain_help`` makes every command and group
of an app (and of its sub-apps) escape its help and its options' help as typer builds
them, so every command written now or later reads as written and nobody has to
remember to escape a bracket. Nothing in the project's help uses markup on purpose.
"""

from __future__ import annotations

from typing import Any

import typer
from rich.markup import escape
from typer.core import TyperCommand, TyperGroup
from typer.models import DefaultPlaceholder

_plain: dict[type, type] = {}


class _PlainHelp:
    """Mixed into a click command class: its help and its parameters' help are text."""

    help: str | None
    params: list[Any]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.help:
            self.help = escape(self.help)
        for param in self.params:
            if getattr(param, "help", None):
                param.help = escape(param.help)


def _plain_class(base: Any, default: type) -> type:
    """``base`` (or ``default`` when typer's placeholder) with its help escaped."""
    cls = default if base is None or isinstance(base, DefaultPlaceholder) else base
    if issubclass(cls, _PlainHelp):
        return cls
    if cls not in _plain:
        _plain[cls] = type(f"PlainHelp{cls.__name__}", (_PlainHelp, cls), {})
    return _plain[cls]


def plain_help(app: typer.Typer) -> typer.Typer:
    """Make ``app``, its commands and its sub-apps show their help as written; returns
    ``app``. Call it once the app is complete (later registrations are not seen)."""
    callback = app.registered_callback
    if callback is not None and not isinstance(callback.cls, DefaultPlaceholder):
        callback.cls = _plain_class(callback.cls, TyperGroup)  # typer prefers it
    else:
        app.info.cls = _plain_class(app.info.cls, TyperGroup)
    for command in app.registered_commands:
        command.cls = _plain_class(command.cls, TyperCommand)
    for group in app.registered_groups:
        if group.typer_instance is not None:
            plain_help(group.typer_instance)
        if not isinstance(group.cls, DefaultPlaceholder):  # given to add_typer: it wins
            group.cls = _plain_class(group.cls, TyperGroup)
    return app


__all__ = ["plain_help"]
