"""Reading a service's TOML configuration: known tables and settings only, typed, each
overridable by environment, and every mistake named."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from runtime.config import is_host_port, read_settings, resolve_path, toml_string
from runtime.errors import ConfigError

TABLES = {"svc": {"name": str, "workers": int}, "log": {"level": str}}


def refusal(read: Callable[[], object]) -> str:
    """What the ConfigError ``read`` raises says."""
    with pytest.raises(ConfigError) as caught:
        read()
    return str(caught.value)


def settings(tmp_path: Path, text: str, environ: dict[str, str] | None = None,
             env_prefix: str | None = None) -> dict[str, dict[str, str | int]]:
    path = tmp_path / "svc.toml"
    path.write_text(text, encoding="utf-8")
    return read_settings(path, TABLES, init="timebank svc init", environ=environ or {},
                         env_prefix=env_prefix)


def test_settings_are_read_by_table_and_overridden_by_environment(tmp_path: Path) -> None:
    text = '[svc]\nname = "江宁区"\nworkers = 4\n'
    assert settings(tmp_path, text) == {"svc": {"name": "江宁区", "workers": 4}, "log": {}}
    assert settings(tmp_path, text, {"TIMEBANK_SVC_WORKERS": " 9 ", "TIMEBANK_LOG_LEVEL": "x"},
                    ) == {"svc": {"name": "江宁区", "workers": 9}, "log": {"level": "x"}}
    assert settings(tmp_path, text, {"TIMEBANK_OTHER_WORKERS": "9",
                                     "TIMEBANK_OTHER_LEVEL": "debug"}, env_prefix="TIMEBANK_OTHER_",
                    ) == {"svc": {"name": "江宁区", "workers": 9}, "log": {"level": "debug"}}


@pytest.mark.parametrize(("text", "environ", "says"), [
    ("[svcc]\n", {}, "unknown settings svcc; settings live in the [svc], [log] tables"),
    ("[svc]\nnmae = 'x'\n", {}, "unknown settings in [svc]: nmae (known: name, workers)"),
    ("svc = 3\n", {}, "[svc] must be a table"),
    ("[svc]\nname = 3\n", {}, "[svc] name must be a string"),
    ("[svc]\nworkers = '3'\n", {}, "[svc] workers must be a whole number"),
    ("[svc]\nworkers = 2.5\n", {}, "[svc] workers must be a whole number"),
    ("[svc]\nworkers = true\n", {}, "[svc] workers must be a whole number"),
    ("", {"TIMEBANK_SVC_WORKERS": "many"},
     "[svc] workers must be a whole number, not 'many' (from TIMEBANK_SVC_WORKERS)"),
    ("[svc\n", {}, "is not valid TOML"),
])
def test_mistakes_are_refused_by_name(tmp_path: Path, text: str, environ: dict[str, str],
                                      says: str) -> None:
    assert says in refusal(lambda: settings(tmp_path, text, environ))


def test_a_file_that_cannot_be_read_says_why(tmp_path: Path) -> None:
    for path, says in ((tmp_path / "missing.toml", "run `x svc init`"),
                       (tmp_path, "is a directory"),
                       (tmp_path / "latin1.toml", "is not UTF-8 text")):
        if path.name == "latin1.toml":
            path.write_bytes('name = "é"'.encode("latin-1"))
        assert says in refusal(
            lambda path=path: read_settings(path, TABLES, init="x svc init", environ={}))


def test_paths_addresses_and_strings(tmp_path: Path) -> None:
    assert resolve_path(tmp_path, "data") == tmp_path / "data"
    assert resolve_path(tmp_path, "/srv/data") == Path("/srv/data")
    assert resolve_path(tmp_path, "~/data") == Path.home() / "data"
    assert is_host_port("127.0.0.1:7400") and is_host_port("[::1]:7400")
    for bad in ("7400", "127.0.0.1:", "127.0.0.1:0", ":7400", "h:65536", "h:７４００", "h:-1"):
        assert not is_host_port(bad), bad
    assert is_host_port(":9474", any_host=True) and is_host_port("h:0", any_port=True)
    assert toml_string('a "b" \\ 江宁') == '"a \\"b\\" \\\\ 江宁"'


def test_a_target_names_one_server_or_every_replica() -> None:
    from runtime.config import is_target

    for good in ("127.0.0.1:7400", "ch.city:7400", "ipv4:10.0.0.5:7400,10.0.0.6:7400",
                 "ipv6:[::1]:7400,[::1]:7401", "dns:///clearinghouse.city:7400"):
        assert is_target(good), good
    for bad in ("", "ch.city", "ipv4:", "ipv4:10.0.0.5", "ipv4:10.0.0.5:7400,", "dns:///x",
                "10.0.0.5:0", "10.0.0.5:70000"):
        assert not is_target(bad), bad
