"""``timebank node config …`` and ``timebank clearinghouse config …``: one command group,
built from a service's ``Schema`` (ADR 0020), so that both services answer alike.

``show`` prints every effective setting and where it came from (the file, an
environment variable, or the default), passwords in URLs hidden; ``check`` reads the
file as the service does at start and also checks that the files it names are there,
exit code 0 or 1 with the error naming the setting; ``example`` prints the documented
example file (deploy/*.example.toml are its output, and a test keeps them equal).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from runtime.config import DEFAULT, ENV, Schema, Settings, toml_value
from runtime.console import (
    console,
    describe_error,
    echo,
    guarded,
    masked_url,
    print_error,
    print_json,
)
from runtime.errors import ConfigError

AsJson = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]
ConfigFile = Annotated[Path, typer.Option(
    "--config", "-c", metavar="FILE",
    help="The service's configuration file (node.toml or clearinghouse.toml).")]


def _shown(settings: Settings, table: str, key: str) -> str:
    value = settings.values[(table, key)]
    if settings.schema.setting(table, key).secret and isinstance(value, str) and value:
        return masked_url(value)
    return toml_value(value)


def _source(settings: Settings, table: str, key: str) -> tuple[str, str]:
    """(kind, name): file and its path, env and the variable, or default."""
    source = settings.sources[(table, key)]
    return source.kind, source.name


def _warnings(settings: Settings) -> list[str]:
    """A line for each TIMEBANK_<TABLE>_* variable that names no setting, with the
    variable of a setting of that key in another table (a setting that moved)."""
    out = []
    for name in settings.ignored_env:
        key = name.split("_", 2)[-1].lower()
        moved = [s.env for s in settings.schema.settings if s.key == key]
        hint = f"; did you mean {' or '.join(moved)}?" if moved else ""
        out.append(f"环境变量 {name} 不对应任何配置项，已忽略 ({name} names no setting of the "
                   f"{settings.schema.service}: it is ignored{hint})")
    return out


def config_commands(schema: Schema, ready: Callable[[Settings], object],
               example: Callable[[], str]) -> typer.Typer:
    """The ``config`` command group of the service ``schema`` describes. ``ready``
    checks the settings whole, as the service does at start, and the files they name;
    it raises ConfigError naming the setting."""
    app = typer.Typer(help=f"The {schema.service}'s configuration: show, check, example "
                           "(配置：查看、检查、示例).", no_args_is_help=True)

    @app.command("show")
    @guarded
    def show(config_file: ConfigFile, as_json: AsJson = False) -> None:
        """Every effective setting and its source: the file, an environment variable
        (TIMEBANK_<TABLE>_<KEY>) or the default."""
        settings = schema.read(config_file)
        if as_json:
            rows: list[dict[str, Any]] = []
            for s in schema.settings:
                kind, name = _source(settings, s.table, s.key)
                value = settings.values[(s.table, s.key)]
                rows.append({"table": s.table, "key": s.key, "env": s.env,
                             "value": list(value) if isinstance(value, tuple) else
                             (masked_url(value) if s.secret and isinstance(value, str)
                              and value else value),
                             "source": kind, "from": name})
            print_json({"file": str(config_file), "settings": rows,
                        "ignored_env": list(settings.ignored_env)})
            return
        echo(f"# {escape(str(config_file))}")
        for table in schema.tables:
            echo(f"\\[{table.name}]")
            for s in schema.in_table(table.name):
                kind, name = _source(settings, s.table, s.key)
                where = {DEFAULT: "默认 default",
                         ENV: f"环境变量 env {name}"}.get(kind, "文件 file")
                console().print(f"{s.key} = {escape(_shown(settings, s.table, s.key))}  "
                                f"[dim]# {escape(where)}[/]", soft_wrap=True)
        for line in _warnings(settings):
            console().print(f"[yellow]warning:[/] {escape(line)}", soft_wrap=True)

    @app.command("check")
    def check(config_file: ConfigFile, as_json: AsJson = False) -> None:
        """Check the file as the service does at start, and that the files it names are
        there: exit code 0 if it can be used, 1 with the setting that is wrong."""
        try:
            settings = schema.read(config_file)
            ready(settings)
        except (ConfigError, OSError) as e:
            message = describe_error(e) or str(e)
            if as_json:
                print_json({"file": str(config_file), "valid": False, "error": message})
            else:
                print_error(message)
            raise typer.Exit(1) from None
        warnings = _warnings(settings)
        if as_json:
            print_json({"file": str(config_file), "valid": True, "warnings": warnings})
            return
        echo(f"[green]配置有效[/] (the configuration is valid): {escape(str(config_file))}")
        for line in warnings:
            console().print(f"[yellow]warning:[/] {escape(line)}", soft_wrap=True)

    @app.command("example")
    def show_example() -> None:
        """The documented example file: every setting, its description and default."""
        typer.echo(example(), nl=False)

    return app


__all__ = ["config_commands"]
