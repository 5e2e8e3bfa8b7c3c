"""The commands' one-line errors: what an operator can act on is one red line and exit
code 1; a bug is raised on."""

from __future__ import annotations

import errno

import pytest
import typer
from sqlalchemy.exc import OperationalError

from runtime.console import CliError, describe_error, guarded
from runtime.devclock import DevClockError
from runtime.errors import ConfigError, InvalidArgument, NotFound


@pytest.mark.parametrize(("error", "line"), [
    (CliError("say where: --data-dir DIR"), "say where: --data-dir DIR"),
    (ConfigError("[node] node_id must be a string"), "[node] node_id must be a string"),
    (DevClockError("a simulated clock is for demos"), "a simulated clock is for demos"),
    (NotFound("order 9 does not exist", "UNKNOWN_ORDER"),
     "NOT_FOUND: order 9 does not exist (UNKNOWN_ORDER)"),
    (InvalidArgument("bad"), "INVALID_ARGUMENT: bad"),  # no reason beyond the status
    (PermissionError(errno.EACCES, "Permission denied", "/etc/key"),
     "permission denied: /etc/key"),
    (FileNotFoundError(errno.ENOENT, "No such file", "/x.toml"),
     "no such file or directory: /x.toml"),
    (OSError("cannot listen on 127.0.0.1:1"), "cannot listen on 127.0.0.1:1"),
    (OperationalError("SELECT 1", {}, Exception("connection refused\nmore detail")),
     "the database cannot be used: connection refused"),
])
def test_what_an_operator_can_act_on_is_one_line(error: Exception, line: str) -> None:
    assert describe_error(error) == line


def test_guarded_exits_1_with_one_red_line_and_raises_a_bug_on(
        capsys: pytest.CaptureFixture[str]) -> None:
    @guarded
    def refused() -> None:
        raise NotFound("order 9 does not exist", "UNKNOWN_ORDER")

    @guarded
    def bug() -> None:
        raise KeyError("a bug")

    with pytest.raises(typer.Exit) as caught:
        refused()
    assert caught.value.exit_code == 1
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert lines == ["error: NOT_FOUND: order 9 does not exist (UNKNOWN_ORDER)"]
    with pytest.raises(KeyError):
        bug()
