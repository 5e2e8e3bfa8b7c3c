"""`timebank audit` on a real city: the demo's databases, each test tampering with one
table of a copy and checking that the audit names that file, table and entry; and the
same city copied into PostgreSQL, read through the audit's own read format."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import MetaData, create_engine, select, text

from city.audit import BadRecord, Report, audit_data_dir
from runtime import keyfiles
from tests.clearinghouse.conftest import ch_pg_template  # noqa: F401
from tests.postgres import fresh_database
from timebank import checkpoint as notes
from timebank import keys, transparency

CH_DB = "clearinghouse/clearinghouse.sqlite3"
JIANGNING = "320115/node.sqlite3"
GULOU = "320106/node.sqlite3"


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONIOENCODING": "utf-8", "COLUMNS": "200"}


@pytest.fixture(scope="module")
def city(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("audit") / "city"
    done = subprocess.run([sys.executable, "-m", "city", "demo", "--data-dir", str(root)],
                          capture_output=True, text=True, timeout=180, env=_env())
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    yield root


@pytest.fixture
def copy(city: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(city, tmp_path / "city"))


def sql(db: Path, statement: str, *params: object) -> None:
    with sqlite3.connect(db) as conn:
        for part in statement.split(";"):
            if part.strip():
                conn.execute(part, params if "?" in part else ())
    conn.close()


def one(db: Path, query: str) -> object:
    with sqlite3.connect(db) as conn:
        value = conn.execute(query).fetchone()[0]
    conn.close()
    return value


def first_bad(root: Path) -> BadRecord:
    report = audit_data_dir(root)
    assert not report.ok
    bad = report.first_bad
    assert bad is not None
    return bad


def _bad(bad: BadRecord) -> tuple[str, str, str]:
    return bad.file, bad.table, bad.entry


def _run_cli(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "city", "audit", "--data-dir", str(root),
                           "--json"], capture_output=True, text=True, timeout=60, env=_env())


def test_a_clean_city_passes(copy: Path) -> None:
    files = sorted(p.relative_to(copy) for p in copy.rglob("*"))
    report: Report = audit_data_dir(copy)
    assert sorted(p.relative_to(copy) for p in copy.rglob("*")) == files  # wrote nothing
    assert report.ok, [c for c in report.checks if not c.ok]
    names = [c.name for c in report.checks]
    assert "clearinghouse log" in names and "江宁区 320115 anchors" in names
    anchors = next(c for c in report.checks if c.name == "江宁区 320115 anchors")
    assert "proven in the log" in anchors.detail
    done = _run_cli(copy)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "✓" in done.stdout and "✗" not in done.stdout
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["ok"] is True and summary["first_bad"] is None


def test_a_changed_posting_is_named_by_the_cli(copy: Path) -> None:
    sql(copy / JIANGNING, "UPDATE postings SET minutes = minutes + 1 WHERE seq = 2 "
                          "AND position = 0")
    assert _bad(first_bad(copy)) == (JIANGNING, "postings", "seq 2")
    done = _run_cli(copy)
    assert done.returncode == 1
    assert "✗" in done.stdout
    assert f"{JIANGNING}, table postings, seq 2" in " ".join(done.stderr.split())
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["ok"] is False
    assert summary["first_bad"]["table"] == "postings"


def test_a_deleted_entry(copy: Path) -> None:
    sql(copy / JIANGNING, "DELETE FROM postings WHERE seq = 2; DELETE FROM entries WHERE seq = 2")
    assert _bad(first_bad(copy)) == (JIANGNING, "entries", "seq 2")


def test_an_inserted_entry(copy: Path) -> None:
    db = copy / JIANGNING
    last = int(one(db, "SELECT max(seq) FROM entries"))  # type: ignore[call-overload]
    sql(db, "INSERT INTO entries (seq, kind, at, memo, order_id, reverses_seq, prev_hash, hash) "
            "SELECT ?, kind, at, memo, order_id, reverses_seq, "
            "(SELECT hash FROM entries WHERE seq = ?), randomblob(32) FROM entries WHERE seq = 1",
        last + 1, last)
    sql(db, "INSERT INTO postings (seq, position, account_id, minutes) "
            "SELECT ?, position, account_id, minutes FROM postings WHERE seq = 1", last + 1)
    assert _bad(first_bad(copy)) == (JIANGNING, "entries", f"seq {last + 1}")


def test_two_entries_swapped(copy: Path) -> None:
    sql(copy / JIANGNING,
        "UPDATE postings SET seq = -1 WHERE seq = 2; UPDATE entries SET seq = -1 WHERE seq = 2;"
        "UPDATE postings SET seq = 2 WHERE seq = 3; UPDATE entries SET seq = 2 WHERE seq = 3;"
        "UPDATE postings SET seq = 3 WHERE seq = -1; UPDATE entries SET seq = 3 WHERE seq = -1")
    assert _bad(first_bad(copy)) == (JIANGNING, "entries", "seq 2")


def test_a_rewritten_clearinghouse_claim(copy: Path) -> None:
    claim = one(copy / CH_DB, "SELECT min(claim_id) FROM claims")
    sql(copy / CH_DB, "UPDATE claims SET state = 'voided', posted_minutes = NULL, "
                      "reason = 'CANCELLED' WHERE claim_id = ?", claim)
    assert _bad(first_bad(copy)) == (CH_DB, "claims", f"claim {claim}")


def test_a_rewritten_node_claim(copy: Path) -> None:
    claim = one(copy / GULOU, "SELECT min(claim_id) FROM claims WHERE state = 'completed'")
    sql(copy / GULOU, "UPDATE claims SET state = 'expired', reason = 'EXPIRED' "
                      "WHERE claim_id = ?", claim)
    assert _bad(first_bad(copy)) == (GULOU, "claims", f"claim {claim}")


def test_an_edited_log_leaf(copy: Path) -> None:
    data = bytearray(one(copy / CH_DB, "SELECT data FROM log_leaves WHERE idx = 11"))  # type: ignore[call-overload]
    data[-1] ^= 0x01
    sql(copy / CH_DB, "UPDATE log_leaves SET data = ? WHERE idx = 11", bytes(data))
    assert _bad(first_bad(copy)) == (CH_DB, "log_leaves", "idx 11")


def test_a_replaced_tree_head_root(copy: Path) -> None:
    size = one(copy / CH_DB, "SELECT min(size) FROM tree_heads WHERE size > 5")
    sql(copy / CH_DB, "UPDATE tree_heads SET root = randomblob(32) WHERE size = ?", size)
    assert _bad(first_bad(copy)) == (CH_DB, "tree_heads", f"size {size}")


def test_a_replaced_tree_head_note(copy: Path) -> None:
    sizes = [int(r[0]) for r in sqlite3.connect(copy / CH_DB).execute(
        "SELECT size FROM tree_heads WHERE size > 5 ORDER BY size LIMIT 2")]
    sql(copy / CH_DB, "UPDATE tree_heads SET note = (SELECT note FROM tree_heads "
                      "WHERE size = ?) WHERE size = ?", sizes[1], sizes[0])
    assert _bad(first_bad(copy)) == (CH_DB, "tree_heads", f"size {sizes[0]}")


def test_a_head_signed_with_fewer_districts_than_admitted(copy: Path) -> None:
    """A clearinghouse that signs a head claiming fewer districts (to lower the quorum
    its passbooks need) is caught: the log's admissions say otherwise."""
    key = keyfiles.read_seed(copy / "clearinghouse" / "clearinghouse.key")
    origin = transparency.clearinghouse_origin(keys.public_key(key))
    size, note = sqlite3.connect(copy / CH_DB).execute(
        "SELECT size, note FROM tree_heads ORDER BY size DESC LIMIT 1").fetchone()
    found = notes.Checkpoint.parse(notes.SignedNote.parse(note).text)
    fewer = notes.Checkpoint(found.origin, found.size, found.root,
                             (transparency.districts_line(1),))
    sql(copy / CH_DB, "UPDATE tree_heads SET note = ? WHERE size = ?",
        notes.sign_note(fewer.body(), origin, key), size)
    sql(copy / CH_DB, "DELETE FROM cosignatures WHERE size = ?", size)
    bad = first_bad(copy)
    assert _bad(bad) == (CH_DB, "tree_heads", f"size {size}")
    assert "1 districts" in bad.problem and "give 3" in bad.problem


def test_a_changed_position(copy: Path) -> None:
    sql(copy / CH_DB, "UPDATE positions SET net_minutes = net_minutes + 15 "
                      "WHERE node_id = '320106'")
    assert _bad(first_bad(copy)) == (CH_DB, "positions", "node 320106")


def test_a_changed_anchor(copy: Path) -> None:
    count = one(copy / GULOU, "SELECT max(entry_count) FROM log_anchors")
    assert count is not None, "the demo anchors every ledger"
    sql(copy / GULOU, "UPDATE log_anchors SET ledger_root = randomblob(32) "
                      "WHERE entry_count = ?", count)
    assert _bad(first_bad(copy)) == (GULOU, "log_anchors", f"entry_count {count}")


def test_a_forged_cosignature(copy: Path) -> None:
    size, witness = sqlite3.connect(copy / CH_DB).execute(
        "SELECT size, min(witness) FROM cosignatures GROUP BY size HAVING count(*) > 1 "
        "ORDER BY size LIMIT 1").fetchone()
    other = one(copy / CH_DB, f"SELECT line FROM cosignatures WHERE witness <> '{witness}' "
                              f"AND size = {size}")
    sql(copy / CH_DB, "UPDATE cosignatures SET line = ? WHERE size = ? AND witness = ?",
        other, size, witness)
    assert _bad(first_bad(copy)) == (CH_DB, "cosignatures", f"size {size}, witness {witness}")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _into_postgres(sqlite_file: Path, url: str) -> None:
    """Every row of a SQLite database into a migrated PostgreSQL database of its schema."""
    source, target = create_engine(f"sqlite:///{sqlite_file}"), create_engine(url)
    read, write = MetaData(), MetaData()
    read.reflect(source)
    write.reflect(target)
    tables = [t for t in write.sorted_tables if t.name != "alembic_version"]
    try:
        with source.connect() as src, target.begin() as dst:
            for table in reversed(tables):
                dst.execute(table.delete())
            for table in tables:
                rows = [dict(r._mapping) for r in src.execute(select(read.tables[table.name]))]
                if rows:
                    dst.execute(table.insert(), rows)
    finally:
        source.dispose()
        target.dispose()


@pytest.fixture
def on_postgres(copy: Path, pg_template: str | None,
                ch_pg_template: str | None) -> Iterator[tuple[Path, dict[str, str]]]:  # noqa: F811
    """The copied city with every database moved into PostgreSQL; the URLs by folder."""
    made = [fresh_database(ch_pg_template, "tb_ch")]
    made += [fresh_database(pg_template, "tb") for _ in range(3)]
    urls: dict[str, str] = {}
    try:
        for gen, folder in zip(made, ["clearinghouse", "320115", "320106", "320113"],
                               strict=True):
            urls[folder] = next(gen)
            config = copy / folder / ("clearinghouse.toml" if folder == "clearinghouse"
                                      else "node.toml")
            db = next((copy / folder).glob("*.sqlite3"))
            _into_postgres(db, urls[folder])
            db.unlink()
            config.write_text(config.read_text(encoding="utf-8").replace(
                'database_url = ""', f'database_url = "{urls[folder]}"'), encoding="utf-8")
        yield copy, urls
    finally:
        for gen in made:
            next(gen, None)


def test_a_city_on_postgresql_is_audited_the_same(
        on_postgres: tuple[Path, dict[str, str]]) -> None:
    root, urls = on_postgres
    assert not list(root.rglob("*.sqlite3"))
    report = audit_data_dir(root)
    assert report.ok, [c for c in report.checks if not c.ok]
    anchors = next(c for c in report.checks if c.name == "江宁区 320115 anchors")
    assert "proven in the log" in anchors.detail

    engine = create_engine(urls["320115"])
    with engine.begin() as conn:
        conn.execute(text("UPDATE postings SET minutes = minutes + 1 "
                          "WHERE seq = 2 AND position = 0"))
    engine.dispose()
    bad = first_bad(root)
    assert (bad.table, bad.entry) == ("postings", "seq 2") and "tb_" in bad.file

    engine = create_engine(urls["clearinghouse"])
    with engine.begin() as conn:
        conn.execute(text("UPDATE log_leaves SET data = data || '\\x00'::bytea "
                          "WHERE idx = 11"))
    engine.dispose()
    bad = first_bad(root)
    assert (bad.table, bad.entry) == ("log_leaves", "idx 11")


def test_a_running_clearinghouse_over_grpc(copy: Path) -> None:
    import grpc

    from runtime.keyfiles import read_seed
    from timebank.keys import public_key

    key = public_key(read_seed(copy / "clearinghouse" / "clearinghouse.key")).hex()
    address = f"127.0.0.1:{_free_port()}"
    env = {**_env(), "TIMEBANK_CLEARINGHOUSE_LISTEN": address}
    log = (copy / "serve.log").open("wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "city", "clearinghouse", "serve", "--config",
         str(copy / "clearinghouse" / "clearinghouse.toml")],
        stdout=log, stderr=subprocess.STDOUT, env=env, cwd=copy)
    try:
        with grpc.insecure_channel(address) as channel:
            grpc.channel_ready_future(channel).result(timeout=20)
        cmd = [sys.executable, "-m", "city", "audit", "--clearinghouse", address]
        done = subprocess.run([*cmd, "--clearinghouse-key", key, "--json"],
                              capture_output=True, text=True, timeout=60, env=_env())
        assert done.returncode == 0, done.stdout + done.stderr
        summary = json.loads(done.stdout.strip().splitlines()[-1])
        assert summary["ok"] is True
        assert [c["name"] for c in summary["checks"]] == [
            "tree head", "log entries", "cosigners", "claims", "positions"]
        wrong = subprocess.run([*cmd, "--clearinghouse-key", "ab" * 32],
                               capture_output=True, text=True, timeout=60, env=_env())
        assert wrong.returncode == 1
        assert "wrong --clearinghouse-key" in wrong.stderr
        assert "Traceback" not in wrong.stderr and len(wrong.stderr.strip().splitlines()) == 1
    finally:
        server.terminate()
        server.wait(timeout=20)
        log.close()


def test_an_unreachable_clearinghouse_is_one_line(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "city", "audit", "--clearinghouse",
                           f"127.0.0.1:{_free_port()}", "--clearinghouse-key", "00" * 32],
                          capture_output=True, text=True, timeout=60, env=_env())
    assert done.returncode == 1
    assert "did not answer: UNAVAILABLE" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
