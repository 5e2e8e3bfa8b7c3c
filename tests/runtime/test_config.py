"""One configuration scheme (ADR 0020): a service's settings declared once, read from a
TOML file with TIMEBANK_<TABLE>_<KEY> overrides, typed, bounded, and every mistake named
with where its value came from."""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest

from runtime.config import (
    DEFAULT,
    ENV,
    FILE,
    Schema,
    Setting,
    Settings,
    Table,
    is_host_port,
    resolve_path,
    toml_string,
)
from runtime.errors import ConfigError

SCHEMA = Schema("svc", "timebank svc init", (
    Table("svc", "服务。", "The service."),
    Table("log", "日志。", "Logs."),
), (
    Setting("svc", "name", "", "名称。", "Its name.", required=True, example="江宁区"),
    Setting("svc", "workers", 8, "线程数。", "Threads.", low=1, high=64),
    Setting("svc", "listen", "127.0.0.1:7443", "地址。", "Where it listens.",
            rule=is_host_port, rule_text="HOST:PORT"),
    Setting("svc", "peers", (), "对端。", "Its peers.", high=2, rule=is_host_port,
            rule_text="HOST:PORT"),
    Setting("svc", "insecure", False, "明文。", "Plaintext."),
    Setting("svc", "database_url", "", "数据库。", "The database.", secret=True),
    Setting("log", "level", "info", "级别。", "The level.", choices=("info", "debug")),
))


def read(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> Settings:
    path = tmp_path / "svc.toml"
    path.write_text(text, encoding="utf-8")
    return SCHEMA.read(path, environ or {})


def refusal(run: Callable[[], object]) -> str:
    """What the ConfigError ``run`` raises says."""
    with pytest.raises(ConfigError) as caught:
        run()
    return str(caught.value)


def test_settings_come_from_the_environment_the_file_or_the_default(tmp_path: Path) -> None:
    text = '[svc]\nname = "江宁区"\nworkers = 4\npeers = ["h:1"]\n'
    found = read(tmp_path, text)
    assert (found.text("svc", "name"), found.number("svc", "workers"),
            found.texts("svc", "peers"), found.flag("svc", "insecure"),
            found.text("log", "level")) == ("江宁区", 4, ("h:1",), False, "info")
    assert found.sources[("svc", "workers")].kind == FILE
    assert found.sources[("log", "level")].kind == DEFAULT
    env = read(tmp_path, text, {"TIMEBANK_SVC_WORKERS": " 9 ", "TIMEBANK_LOG_LEVEL": "debug",
                                "TIMEBANK_SVC_PEERS": "a:1, b:2,", "TIMEBANK_SVC_INSECURE": "1",
                                "TIMEBANK_SVC_LISTEN": ""})
    assert (env.number("svc", "workers"), env.text("log", "level"), env.texts("svc", "peers"),
            env.flag("svc", "insecure"), env.text("svc", "listen")) == (
        9, "debug", ("a:1", "b:2"), True, "")  # an empty variable sets an empty text
    source = env.sources[("svc", "workers")]
    assert (source.kind, source.name) == (ENV, "TIMEBANK_SVC_WORKERS")
    assert env.is_set("svc", "workers") and not env.is_set("svc", "database_url")


def test_variables_that_name_no_setting_are_listed_not_refused(tmp_path: Path) -> None:
    """One environment serves both services and the tools (TIMEBANK_CA, ...)."""
    found = read(tmp_path, '[svc]\nname = "x"\n', {"TIMEBANK_SVC_WORKRES": "3",
                                                  "TIMEBANK_CA": "ca.pem",
                                                  "TIMEBANK_LOG_LEVEL": "info"})
    assert found.ignored_env == ("TIMEBANK_SVC_WORKRES",)


@pytest.mark.parametrize(("text", "environ", "says"), [
    ("[svcc]\n", {}, "unknown table [svcc]; the svc's settings live in [svc], [log]"),
    ("[svc]\nnmae = 'x'\n", {},
     "unknown setting [svc] nmae; known in [svc]: name, workers, listen"),
    ("svc = 3\n", {}, "[svc] must be a table"),
    ("[svc]\nname = 3\n", {}, "[svc] name must be text, not 3; from "),
    ("[svc]\nname = 'x'\nworkers = '3'\n", {},
     "[svc] workers must be a whole number from 1 to 64, not '3'; from "),
    ("[svc]\nname = 'x'\nworkers = 2.5\n", {}, "[svc] workers must be a whole number"),
    ("[svc]\nname = 'x'\nworkers = true\n", {}, "[svc] workers must be a whole number"),
    ("[svc]\nname = 'x'\nworkers = 65\n", {}, "from 1 to 64, not 65; from "),
    ("[svc]\nname = 'x'\n", {"TIMEBANK_SVC_WORKERS": "many"},
     "[svc] workers must be a whole number from 1 to 64, not 'many'; from environment "
     "variable TIMEBANK_SVC_WORKERS"),
    ("[svc]\nname = 'x'\n", {"TIMEBANK_SVC_WORKERS": "0"}, "not '0'; from environment variable"),
    ("[svc]\nname = 'x'\n", {"TIMEBANK_SVC_INSECURE": "yes"},
     "[svc] insecure must be true or false, not 'yes'; from environment variable"),
    ("[svc]\nname = 'x'\nlisten = 'nowhere'\n", {}, "[svc] listen must be HOST:PORT"),
    ("[svc]\nname = 'x'\npeers = ['a:1', 'b:2', 'c:3']\n", {},
     "[svc] peers must be a list of at most 2 texts, each HOST:PORT"),
    ("[svc]\nname = 'x'\npeers = 'a:1'\n", {}, "[svc] peers must be a list"),
    ("[svc]\nname = 'x'\n[log]\nlevel = 'loud'\n", {}, "[log] level must be one of info, debug"),
    ("", {}, "[svc] name is required: set it in "),
    ("[svc]\nname = ''\n", {"TIMEBANK_SVC_NAME": ""}, "or by TIMEBANK_SVC_NAME"),
    ("[svc\n", {}, "is not valid TOML"),
])
def test_mistakes_are_refused_naming_the_setting_and_its_source(
        tmp_path: Path, text: str, environ: dict[str, str], says: str) -> None:
    message = refusal(lambda: read(tmp_path, text, environ))
    assert says in message
    if "from " in says and "environment" not in says:
        assert str(tmp_path / "svc.toml") in message  # the file it came from


def test_a_secret_is_never_shown_in_an_error(tmp_path: Path) -> None:
    message = refusal(lambda: read(tmp_path, "[svc]\nname = 'x'\ndatabase_url = 5\n"))
    assert "[svc] database_url must be text, not (hidden)" in message


def test_a_file_that_cannot_be_read_says_why(tmp_path: Path) -> None:
    for path, says in ((tmp_path / "missing.toml", "run `timebank svc init`"),
                       (tmp_path, "is a directory"),
                       (tmp_path / "latin1.toml", "is not UTF-8 text")):
        if path.name == "latin1.toml":
            path.write_bytes('name = "é"'.encode("latin-1"))
        assert says in refusal(lambda path=path: SCHEMA.read(path, {}))


def test_a_check_of_more_than_one_setting_names_it_and_its_source(tmp_path: Path) -> None:
    found = read(tmp_path, "[svc]\nname = 'x'\n", {"TIMEBANK_SVC_WORKERS": "3"})
    assert str(found.refuse("svc", "workers", "must be even")) == (
        "配置项 [svc] workers 无效 ([svc] workers must be even; from environment variable "
        "TIMEBANK_SVC_WORKERS)")
    assert "from the default" in str(found.refuse("svc", "listen", "is taken"))
    with pytest.raises(ConfigError, match=r"\[svc\] name names .*gone, which does not exist"):
        found.must_exist("svc", "name", tmp_path / "gone")


def test_a_declaration_is_checked_when_it_is_made() -> None:
    for bad, says in (
            (lambda: Setting("svc", "n", 3, "数。", "A number."), "needs bounds"),
            (lambda: Setting("svc", "l", (), "表。", "A list."), "length bound"),
            (lambda: Setting("svc", "x", "", "", "No Chinese."), "Chinese and English"),
            (lambda: Setting("svc", "Bad-Key", "", "键。", "A key."), "lower_snake"),
            (lambda: Setting("svc", "n", 0, "数。", "A number.", low=1, high=2),
             "default 0 is not valid"),
            (lambda: Schema("s", "init", (), SCHEMA.settings[:1]), "not declared"),
            (lambda: Schema("s", "init", SCHEMA.tables, SCHEMA.settings[:1] * 2),
             "declared twice")):
        with pytest.raises(ValueError, match=says):
            bad()


def test_the_rendered_file_documents_every_setting_and_reads_back(tmp_path: Path) -> None:
    text = SCHEMA.render({("svc", "workers"): 3}, header="示例\nAn example.", example=True)
    doc = tomllib.loads(text)
    assert doc["svc"]["workers"] == 3 and doc["svc"]["name"] == "江宁区"
    assert doc["svc"]["listen"] == "127.0.0.1:7443" and doc["svc"]["peers"] == []
    for s in SCHEMA.settings:
        assert f"# {s.zh}" in text and s.env in text and s.key in doc[s.table]
    path = tmp_path / "svc.toml"
    path.write_text(text, encoding="utf-8")
    assert SCHEMA.read(path, {}).number("svc", "workers") == 3
    with pytest.raises(KeyError):
        SCHEMA.render({("svc", "nope"): 1}, header="x")


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
