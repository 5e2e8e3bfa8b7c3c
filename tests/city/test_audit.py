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
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import MetaData, create_engine, select, text

from city.audit import AuditError, BadRecord, Check, Report, audit_data_dir
from city.pki.store import Authority
from runtime import keyfiles
from runtime.tls import OBSERVER, ClientTls, channel
from tests.city.conftest import DemoCity
from tests.clearinghouse.conftest import ch_pg_template  # noqa: F401
from tests.pki import issue
from tests.postgres import fresh_database
from timebank import anchors, chain, keys, merkle, transparency
from timebank import checkpoint as notes

CH_DB = "clearinghouse/clearinghouse.sqlite3"
JIANGNING = "320115/node.sqlite3"
GULOU = "320106/node.sqlite3"


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONIOENCODING": "utf-8", "COLUMNS": "200"}


@pytest.fixture
def copy(demo_city: DemoCity, tmp_path: Path) -> Path:
    """A copy of the demo's city (tests/city/conftest.py) for this test to tamper with."""
    return Path(shutil.copytree(demo_city.data_dir, tmp_path / "city"))


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
    kept = tuple(line for line in found.extensions
                 if not line.startswith(transparency.DISTRICTS_PREFIX))
    fewer = notes.Checkpoint(found.origin, found.size, found.root,
                             (transparency.districts_line(1), *kept))
    sql(copy / CH_DB, "UPDATE tree_heads SET note = ? WHERE size = ?",
        notes.sign_note(fewer.body(), origin, key), size)
    sql(copy / CH_DB, "DELETE FROM cosignatures WHERE size = ?", size)
    bad = first_bad(copy)
    assert _bad(bad) == (CH_DB, "tree_heads", f"size {size}")
    assert "1 districts" in bad.problem and "lists 3" in bad.problem


def test_a_head_that_names_no_roster_after_the_city_signed_one(copy: Path) -> None:
    """Dropping the roster line (so that no quorum can be counted against the city's
    districts) is caught: the log holds the city-signed roster the head must name."""
    key = keyfiles.read_seed(copy / "clearinghouse" / "clearinghouse.key")
    origin = transparency.clearinghouse_origin(keys.public_key(key))
    size, note = sqlite3.connect(copy / CH_DB).execute(
        "SELECT size, note FROM tree_heads ORDER BY size DESC LIMIT 1").fetchone()
    found = notes.Checkpoint.parse(notes.SignedNote.parse(note).text)
    bare = notes.Checkpoint(found.origin, found.size, found.root,
                            tuple(line for line in found.extensions
                                  if not line.startswith(transparency.ROSTER_PREFIX)))
    sql(copy / CH_DB, "UPDATE tree_heads SET note = ? WHERE size = ?",
        notes.sign_note(bare.body(), origin, key), size)
    sql(copy / CH_DB, "DELETE FROM cosignatures WHERE size = ?", size)
    bad = first_bad(copy)
    assert _bad(bad) == (CH_DB, "tree_heads", f"size {size}")
    assert "names no roster" in bad.problem


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
    ca = Authority(copy / "pki")  # the demo's city CA; its observer certificate reads
    tls = ClientTls(ca.ca_cert, ca.cert_file("observer-city"), ca.key_file("observer-city"))
    observer = {"TIMEBANK_CA": str(tls.ca), "TIMEBANK_CERT": str(tls.cert),
                "TIMEBANK_KEY": str(tls.key)}
    address = f"127.0.0.1:{_free_port()}"
    env = {**_env(), "TIMEBANK_SERVER_LISTEN": address}
    log = (copy / "serve.log").open("wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "city", "clearinghouse", "serve", "--config",
         str(copy / "clearinghouse" / "clearinghouse.toml")],
        stdout=log, stderr=subprocess.STDOUT, env=env, cwd=copy)
    try:
        with channel(address, tls) as ready:
            grpc.channel_ready_future(ready).result(timeout=20)
        cmd = [sys.executable, "-m", "city", "audit", "--clearinghouse", address]
        done = subprocess.run([*cmd, "--clearinghouse-key", key, "--json"],
                              capture_output=True, text=True, timeout=60,
                              env={**_env(), **observer})
        assert done.returncode == 0, done.stdout + done.stderr
        summary = json.loads(done.stdout.strip().splitlines()[-1])
        assert summary["ok"] is True
        assert [c["name"] for c in summary["checks"]] == [
            "tree head", "log entries", "cosigners", "claims", "positions"]
        wrong = subprocess.run([*cmd, "--clearinghouse-key", "ab" * 32],
                               capture_output=True, text=True, timeout=60,
                               env={**_env(), **observer})
        assert wrong.returncode == 1
        assert "wrong --clearinghouse-key" in wrong.stderr
        assert "Traceback" not in wrong.stderr and len(wrong.stderr.strip().splitlines()) == 1
    finally:
        server.terminate()
        server.wait(timeout=20)
        log.close()


def test_an_unreachable_clearinghouse_is_one_line(city_ca: Authority) -> None:
    leaf = issue(city_ca, OBSERVER, "audit")
    cmd = [sys.executable, "-m", "city", "audit", "--clearinghouse",
           f"127.0.0.1:{_free_port()}", "--clearinghouse-key", "00" * 32]
    done = subprocess.run([*cmd, "--ca", str(city_ca.ca_cert), "--cert", str(leaf.cert),
                           "--key", str(leaf.key)],
                          capture_output=True, text=True, timeout=60, env=_env())
    assert done.returncode == 1
    assert "did not answer: UNAVAILABLE" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    # Without an observer certificate the audit says what it needs, and calls nobody.
    bare = subprocess.run(cmd, capture_output=True, text=True, timeout=60,
                          env={k: v for k, v in _env().items()
                               if k not in ("TIMEBANK_CA", "TIMEBANK_CERT", "TIMEBANK_KEY")})
    assert bare.returncode == 1 and "--cert" in bare.stderr and "双向 TLS" in bare.stderr
    assert len(bare.stderr.strip().splitlines()) == 1


# -- the ledgers against the log, and the heads districts hold ------------------------------

QIXIA = "320113/node.sqlite3"


def _checkpoint_leaf(root: Path, node_id: str) -> int:
    return int(one(root / CH_DB, "SELECT max(idx) FROM log_leaves WHERE kind = 'checkpoint' "  # type: ignore[call-overload]
                                 f"AND node_id = '{node_id}'"))


def _check(report: Report, name: str) -> Check:
    return next(c for c in report.checks if c.name == name)


def rewrite_ledger(db: Path, node_id: str, seq: int, minutes: dict[int, int]) -> None:
    """What a district that wants its books changed would do: set entry ``seq``'s
    postings (position -> minutes), keep every balance the sum of its postings, and
    recompute the whole chain and its head with the contract's ``timebank.chain``."""
    conn = sqlite3.connect(db)
    with conn:
        for position, new in minutes.items():
            account, old = conn.execute("SELECT account_id, minutes FROM postings "
                                        "WHERE seq = ? AND position = ?",
                                        (seq, position)).fetchone()
            conn.execute("UPDATE postings SET minutes = ? WHERE seq = ? AND position = ?",
                         (new, seq, position))
            conn.execute("UPDATE accounts SET balance = balance + ? WHERE id = ?",
                         (new - old, account))
        prev = chain.genesis_hash(node_id)
        for s, kind, at, memo, order_id, reverses in conn.execute(
                "SELECT seq, kind, at, memo, order_id, reverses_seq FROM entries "
                "ORDER BY seq").fetchall():
            postings = conn.execute("SELECT a.code, p.minutes FROM postings p JOIN accounts a "
                                    "ON a.id = p.account_id WHERE p.seq = ? "
                                    "ORDER BY p.position", (s,)).fetchall()
            when = chain.format_time(datetime.fromisoformat(at).replace(tzinfo=UTC))
            h = chain.link_hash(prev, chain.entry_bytes(
                seq=s, kind=kind, at=when, memo=memo, order_id=order_id,
                reverses_seq=reverses or 0, postings=postings))
            conn.execute("UPDATE entries SET prev_hash = ?, hash = ? WHERE seq = ?",
                         (prev, h, s))
            prev = h
        conn.execute("UPDATE ledger_head SET seq = (SELECT max(seq) FROM entries), hash = ?",
                     (prev,))
    conn.close()


def test_the_blinding_attack(copy: Path) -> None:
    """A district turns a 600-minute grant into 6,000, recomputes its chain so that every
    hash holds, and deletes its own anchor rows, so nothing of its own remembers the old
    chain. The clearinghouse's log does: the ledger no longer matches the checkpoint the
    district signed there."""
    db = copy / JIANGNING
    grant = [r[0] for r in sqlite3.connect(db).execute(
        "SELECT minutes FROM postings WHERE seq = 1 ORDER BY position")]
    assert grant == [-600, 600]
    count = int(one(db, "SELECT max(entry_count) FROM log_anchors"))  # type: ignore[call-overload]
    leaf = _checkpoint_leaf(copy, "320115")
    rewrite_ledger(db, "320115", 1, {0: -6000, 1: 6000})
    sql(db, "DELETE FROM log_anchors")

    report = audit_data_dir(copy)
    assert _check(report, "江宁区 320115 ledger").ok  # every hash and balance holds
    logged = _check(report, "江宁区 320115 ledger in the log")
    assert not logged.ok and logged.first_bad is not None
    assert _bad(logged.first_bad) == (JIANGNING, "entries", f"seq 1..{count}")
    assert "江宁区 320115" in logged.detail and f"entry {count}" in logged.detail
    assert f"log leaf {leaf}" in logged.detail
    assert report.first_bad == logged.first_bad
    anchors = _check(report, "江宁区 320115 anchors")  # and the deleted rows, on their own
    assert not anchors.ok and anchors.first_bad is not None
    assert _bad(anchors.first_bad) == (JIANGNING, "log_anchors", f"entry_count {count}")
    assert f"at leaf {leaf}" in anchors.detail and "no row" in anchors.detail
    assert all(c.ok for c in report.checks if "江宁区" not in c.name)

    done = _run_cli(copy)
    assert done.returncode == 1
    said = " ".join(done.stderr.split())
    assert f"{JIANGNING}, table entries, seq 1..{count}" in said
    assert "江宁区 320115" in said and f"log leaf {leaf}" in said


def _drop_last_entries(db: Path, keep: int) -> None:
    """Remove every entry after ``keep``, their postings out of the balances, the head
    moved back: a ledger whose tail is lost, consistent in itself."""
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE accounts SET balance = balance - (SELECT coalesce(sum(minutes), "
                     "0) FROM postings p WHERE p.account_id = accounts.id AND p.seq > ?)",
                     (keep,))
        conn.execute("DELETE FROM postings WHERE seq > ?", (keep,))
        conn.execute("DELETE FROM entries WHERE seq > ?", (keep,))
        conn.execute("UPDATE ledger_head SET seq = ?, hash = (SELECT hash FROM entries "
                     "WHERE seq = ?)", (keep, keep))
        conn.execute("DELETE FROM log_anchors WHERE entry_count > ?", (keep,))
    conn.close()


def test_a_ledger_that_lost_anchored_entries(copy: Path) -> None:
    count = int(one(copy / JIANGNING, "SELECT max(entry_count) FROM log_anchors"))  # type: ignore[call-overload]
    _drop_last_entries(copy / JIANGNING, count - 2)
    report = audit_data_dir(copy)
    assert _check(report, "江宁区 320115 ledger").ok
    bad = first_bad(copy)
    assert _bad(bad) == (JIANGNING, "entries", f"seq {count - 1}..{count}")
    assert f"log leaf {_checkpoint_leaf(copy, '320115')}" in bad.problem
    assert f"entries {count - 1}..{count} are missing" in bad.problem


def test_a_district_whose_files_are_gone(copy: Path) -> None:
    shutil.rmtree(copy / "320113")
    bad = first_bad(copy)
    assert _bad(bad) == ("320113/node.toml", "-", "missing")
    assert "栖霞区 320113" in bad.problem
    assert f"leaf {_checkpoint_leaf(copy, '320113')}" in bad.problem


def test_deleted_anchor_rows(copy: Path) -> None:
    """Only the district's own record of its anchors is gone: its ledger still matches
    the log, and the audit names the table that disagrees with the log."""
    count = one(copy / GULOU, "SELECT max(entry_count) FROM log_anchors")
    sql(copy / GULOU, "DELETE FROM log_anchors")
    report = audit_data_dir(copy)
    assert _check(report, "鼓楼区 320106 ledger in the log").ok
    bad = first_bad(copy)
    assert _bad(bad) == (GULOU, "log_anchors", f"entry_count {count}")
    assert bad.problem.startswith("missing:")
    assert f"at leaf {_checkpoint_leaf(copy, '320106')}" in bad.problem


def _ledger_at(db: Path, count: int) -> tuple[bytes, bytes]:
    hashes = [bytes(r[0]) for r in sqlite3.connect(db).execute(
        "SELECT hash FROM entries WHERE seq <= ? ORDER BY seq", (count,))]
    return hashes[-1], merkle.root(hashes)


@pytest.mark.parametrize("log_index, words", [
    ("other", "which is no checkpoint of 鼓楼区 320106"),  # another district's leaf
    ("own", "鼓楼区 320106's checkpoint of 2 entries, not of 1"),
    ("past", "the log has"),  # an anchor the log does not have at all
])
def test_an_anchor_row_that_is_not_the_logs(copy: Path, log_index: str, words: str) -> None:
    """A row of the anchor table that holds of the chain (entry 1 of 鼓楼区's two) but
    names a leaf that is not that checkpoint: more anchors than the log has."""
    own, other = _checkpoint_leaf(copy, "320106"), _checkpoint_leaf(copy, "320115")
    size = int(one(copy / CH_DB, "SELECT count(*) FROM log_leaves"))  # type: ignore[call-overload]
    idx = {"other": other, "own": own, "past": size + 7}[log_index]
    head, root = _ledger_at(copy / GULOU, 1)
    sql(copy / GULOU, "INSERT INTO log_anchors (entry_count, key_id, chain_head, ledger_root, "
                      "checkpoint, log_index, log_entry, log_proof, tree_head, created_at, "
                      "anchored_at) SELECT 1, key_id, ?, ?, checkpoint, ?, log_entry, "
                      "log_proof, tree_head, created_at, anchored_at FROM log_anchors "
                      "WHERE entry_count = 2", head, root, idx)
    bad = first_bad(copy)
    assert _bad(bad) == (GULOU, "log_anchors", "entry_count 1")
    assert words in bad.problem


def _signed_head(copy: Path, size: int, root: bytes, key_file: str = "clearinghouse.key",
                 ) -> str:
    """A tree head signed with a clearinghouse key file, as a second copy of the
    clearinghouse would sign one for the history it shows."""
    key = keyfiles.read_seed(copy / "clearinghouse" / "clearinghouse.key")
    signer = keyfiles.read_seed(copy / "clearinghouse" / key_file)
    origin = transparency.clearinghouse_origin(keys.public_key(key))
    lines = (transparency.districts_line(3), transparency.time_line(1_790_000_000))
    return notes.sign_note(notes.Checkpoint(origin, size, root, lines).body(), origin, signer)


def test_a_split_view_held_by_two_districts(copy: Path) -> None:
    """Two districts hold a head the clearinghouse key signed over another root than the
    log's at that size: each is named, and both heads are printed."""
    size = int(one(copy / CH_DB, "SELECT max(size) FROM tree_heads"))  # type: ignore[call-overload]
    ours = bytes(one(copy / CH_DB, f"SELECT root FROM tree_heads WHERE size = {size}"))  # type: ignore[arg-type]
    forked = bytes(32 * [7])
    note = _signed_head(copy, size, forked)
    for db in (GULOU, QIXIA):
        sql(copy / db, "UPDATE meta SET value = ? WHERE key = 'log.verified_head'", note)
    report = audit_data_dir(copy)
    failed = [c for c in report.checks if not c.ok]
    assert [c.name for c in failed] == ["鼓楼区 320106 tree heads", "栖霞区 320113 tree heads"]
    for check, db, name in zip(failed, (GULOU, QIXIA), ("鼓楼区 320106", "栖霞区 320113"),
                               strict=True):
        assert check.first_bad is not None
        assert _bad(check.first_bad) == (db, "meta", "log.verified_head")
        assert check.detail.startswith(f"split view: {name} holds")
        assert f"size {size}, root {forked.hex()}" in check.detail
        assert f"size {size}, root {ours.hex()}" in check.detail
    done = _run_cli(copy)
    assert done.returncode == 1
    assert forked.hex() in done.stderr.replace("\n", "") and ours.hex() in done.stdout.replace(
        "\n", "").replace(" ", "")


@pytest.mark.parametrize("case, words", [
    ("larger", "the log lost leaves, or the district was shown another copy"),
    ("other key", "did not sign"),
])
def test_a_head_the_log_cannot_have_signed(copy: Path, case: str, words: str) -> None:
    size = int(one(copy / CH_DB, "SELECT count(*) FROM log_leaves"))  # type: ignore[call-overload]
    if case == "larger":
        note = _signed_head(copy, size + 5, bytes(32 * [9]))
    else:
        note = _signed_head(copy, size, bytes(32 * [9]), key_file="city-root.key")
    # set, not updated: under load the demo may end before this district cosigned
    sql(copy / JIANGNING, "INSERT OR REPLACE INTO meta (key, value) "
                          "VALUES ('log.cosigned_head', ?)", note)
    bad = first_bad(copy)
    assert _bad(bad) == (JIANGNING, "meta", "log.cosigned_head")
    assert "江宁区 320115" in bad.problem and words in bad.problem


def test_an_anchors_head_is_compared_too(copy: Path) -> None:
    """The head an anchor's inclusion proof is in is a head the district holds. Shown
    another copy of the log (one other leaf changed), with a proof of its checkpoint in
    that copy's head, the district's anchor holds in itself; its head is a split view."""
    count, idx, note = sqlite3.connect(copy / GULOU).execute(
        "SELECT entry_count, log_index, tree_head FROM log_anchors").fetchone()
    size = transparency.read_head(note).size
    leaves = [bytes(r[0]) for r in sqlite3.connect(copy / CH_DB).execute(
        "SELECT data FROM log_leaves WHERE idx < ? ORDER BY idx", (size,))]
    copied = [*leaves]
    copied[0] = copied[0] + b"\x00"  # the other copy's first leaf differs
    assert idx != 0
    sql(copy / GULOU, "UPDATE log_anchors SET log_proof = ?, tree_head = ?",
        anchors.stored_path(merkle.inclusion_proof(copied, idx)),
        _signed_head(copy, size, merkle.root(copied)))
    report = audit_data_dir(copy)
    assert _check(report, "鼓楼区 320106 anchors").ok  # the proof holds in its own head
    bad = first_bad(copy)
    assert _bad(bad) == (GULOU, "log_anchors", f"entry_count {count}")
    assert bad.problem.startswith("split view: 鼓楼区 320106 holds")
    assert f"root {merkle.root(leaves).hex()}" in bad.problem


def _append_checkpoint(copy: Path, leaf: int, key: keys.SigningKey) -> int:
    """Log again, as a new leaf, the checkpoint recorded at ``leaf``, signed with ``key``:
    appended to the clearinghouse's own log tables with its own storage code."""
    from sqlalchemy import create_engine

    from clearinghouse.storage.merkle_log import LeafRow, MerkleLog
    from clearinghouse.usecases.wire import to_bytes
    from timebank.envelope import sign
    from timebank.v1 import clearing_pb2 as pb

    data = bytes(one(copy / CH_DB, f"SELECT data FROM log_leaves WHERE idx = {leaf}"))  # type: ignore[arg-type]
    entry = pb.LogEntry.FromString(data)
    body = pb.Envelope.FromString(entry.envelope).body
    entry.envelope = to_bytes(sign(anchors.CHECKPOINT_KIND, body, entry.node_id, key))
    engine = create_engine(f"sqlite:///{copy / CH_DB}")
    try:
        with engine.begin() as conn:
            return MerkleLog(conn).append([LeafRow(
                entry.SerializeToString(deterministic=True), anchors.LEAF_KIND,
                node_id=entry.node_id)], datetime.now(UTC))
    finally:
        engine.dispose()


def test_a_rotated_key(copy: Path) -> None:
    """江宁区 gets a new key (the bureau admits it with a higher serial). The checkpoint
    it signed with its old key, logged before, stays valid; one signed with the new key
    after the rotation is valid; one signed with the retired key after it is a leaf the
    clearinghouse should have refused."""
    new = keys.generate()
    done = subprocess.run(
        [sys.executable, "-m", "city", "clearinghouse", "admit", "--config",
         str(copy / "clearinghouse" / "clearinghouse.toml"), "--node-id", "320115",
         "--district", "江宁区", "--public-key", keys.public_key(new).hex()],
        capture_output=True, text=True, timeout=60, env=_env(), cwd=copy)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "retired" in done.stdout
    report = audit_data_dir(copy)
    assert report.ok, report.first_bad
    leaf = _checkpoint_leaf(copy, "320115")
    again = _append_checkpoint(copy, leaf, new)
    report = audit_data_dir(copy)
    assert report.ok, report.first_bad
    assert "2 checkpoints" in _check(report, "江宁区 320115 ledger in the log").detail
    retired = keyfiles.read_seed(copy / "320115" / "node.key")
    replayed = _append_checkpoint(copy, leaf, retired)
    assert replayed == again + 1
    bad = first_bad(copy)
    assert _bad(bad) == (CH_DB, "log_leaves", f"idx {replayed}")
    assert "WRONG_KEY" in bad.problem


def test_any_layout_is_audited_given_its_configuration_files(copy: Path,
                                                             tmp_path: Path) -> None:
    """`timebank audit --config ...`: a city laid out as a bureau and its districts would
    (the clearinghouse under /srv, each node in a folder of its own name), found through
    the configuration files alone; a district left out or a tampered ledger is named."""
    srv = tmp_path / "srv"
    shutil.move(copy / "clearinghouse", srv / "bureau" / "clearinghouse")
    configs = [srv / "bureau" / "clearinghouse" / "clearinghouse.toml"]
    for node_id, name in (("320115", "jiangning"), ("320106", "gulou"), ("320113", "qixia")):
        shutil.move(copy / node_id, srv / "districts" / name)
        configs.append(srv / "districts" / name / "node.toml")
    arguments = [a for c in configs for a in ("--config", str(c))]
    done = subprocess.run([sys.executable, "-m", "city", "audit", *arguments, "--json"],
                          capture_output=True, text=True, timeout=120, env=_env())
    assert done.returncode == 0, done.stdout + done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["ok"] is True and summary["first_bad"] is None
    assert "江宁区 320115 anchors" in done.stdout

    from city.audit.directory import audit_config_files

    missing = audit_config_files(configs[:-1])  # 栖霞区 anchored, but not given
    assert not missing.ok and missing.first_bad is not None
    assert missing.first_bad.entry == "missing" and "320113" in missing.first_bad.file
    sql(srv / "districts" / "jiangning" / "node.sqlite3",
        "UPDATE postings SET minutes = minutes + 1 WHERE seq = 2")
    tampered = audit_config_files(list(reversed(configs)))  # in any order
    assert tampered.first_bad is not None and tampered.first_bad.entry == "seq 2"
    assert tampered.first_bad.table == "postings"
    with pytest.raises(AuditError, match="clearinghouse"):
        audit_config_files(configs[1:])  # no clearinghouse given
    refused = subprocess.run([sys.executable, "-m", "city", "audit", "--data-dir", str(srv)],
                             capture_output=True, text=True, timeout=120, env=_env())
    assert refused.returncode == 1 and "--config FILE" in refused.stderr
