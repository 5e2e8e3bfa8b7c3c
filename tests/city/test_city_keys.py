"""The city's keys across processes (ADR 0018): the root key offline (prepare on the
clearinghouse, sign in another process holding only the key file, import), a node
admitting the district so admitted, tampered and wrongly signed files refused with
nothing changed, and both rotations.

Real `timebank` processes, real Ed25519 keys, a real `clearinghouse serve` and `node
serve` on 127.0.0.1, on TLS with certificates of a real city CA (``tests.pki``): the
clearinghouse asks every client for one (mutual TLS), the node presents its district's,
and the test reads as an observer.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import pytest

from city.launcher import CONFIG_ENV_PREFIXES, METRICS_ENV
from city.pki.store import Authority, Issued
from runtime.tls import ClientTls
from runtime.tls import channel as tls_channel
from tests.pki import NODE, OBSERVER, SERVER, client_tls, issue, now
from timebank import actfile, transparency
from timebank.admissions import chain_of
from timebank.keys import generate, key_id, public_key
from timebank.v1 import clearing_pb2 as pb
from timebank.v1 import clearing_pb2_grpc

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(CONFIG_ENV_PREFIXES)}
    env.update(METRICS_ENV)  # two services on this machine: free ports, not the defaults
    env["PYTHONIOENCODING"] = "utf-8"
    return {**env, **(extra or {})}


def timebank(*args: str | Path, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "city", *map(str, args)],
                          capture_output=True, text=True, encoding="utf-8", timeout=120,
                          cwd=cwd, env=_env())


def ok(*args: str | Path, cwd: Path = ROOT) -> str:
    result = timebank(*args, cwd=cwd)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def refused(*args: str | Path, cwd: Path = ROOT) -> str:
    result = timebank(*args, cwd=cwd)
    assert result.returncode == 1, result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def offline_sign(act: Path, key: Path, out: Path, *more: str | Path) -> str:
    """`timebank city sign` in a process of its own, in a directory holding only the key
    and the act: no configuration, no database, no network."""
    desk = out.parent
    return ok("city", "sign", act, "--key", key, "--out", out, *more, cwd=desk)


def nodes(config: Path) -> list[dict[str, object]]:
    listed: list[dict[str, object]] = json.loads(
        ok("clearinghouse", "nodes", "--config", config, "--json"))
    return listed


def _key_hex(path: Path) -> str:
    from runtime.keyfiles import read_seed

    return public_key(read_seed(path)).hex()


def observer(ca: Authority) -> ClientTls:
    """How the test reaches a served process: trusting the city CA, presenting an
    observer certificate (read-only at the clearinghouse)."""
    return client_tls(ca, issue(ca, OBSERVER, f"test-{time.monotonic_ns()}"))


@pytest.fixture(scope="module")
def city_ca(tmp_path_factory: pytest.TempPathFactory) -> Authority:
    """One city CA for the module, in place of ``tests.pki``'s per-test one: the
    template bureau's certificates are its, and so are every test's copy's."""
    return Authority.init(tmp_path_factory.mktemp("city-keys") / "pki", "test city CA", now())


@pytest.fixture(scope="module")
def node_leaf(city_ca: Authority) -> Issued:
    """The node certificate the city CA issues 320115 (once: a CA keeps one per name)."""
    return issue(city_ca, NODE, "320115")


def node_init(ca: Authority, leaf: Issued, data_dir: Path, *args: str | Path) -> None:
    """`node init` for 320115 江宁区, serving (and calling the clearinghouse) with the
    node certificate the city CA issued it."""
    ok("node", "init", "--data-dir", data_dir, "--node-id", "320115", "--district", "江宁区",
       *args, "--tls-ca", ca.ca_cert, "--tls-cert", leaf.cert, "--tls-key", leaf.key)


@pytest.fixture(scope="module")
def bureau_template(tmp_path_factory: pytest.TempPathFactory, city_ca: Authority) -> Path:
    """Made once per module and copied by every test (``bureau``): a clearinghouse
    serving mutual TLS with the city CA's certificates, whose city root key was moved to
    an offline desk, and a city secret from `clearinghouse city-secret`."""
    base = tmp_path_factory.mktemp("bureau")
    leaf = issue(city_ca, SERVER, "clearinghouse")
    ok("clearinghouse", "init", "--data-dir", base / "ch", "--tls-ca", city_ca.ca_cert,
       "--tls-cert", leaf.cert, "--tls-key", leaf.key, "--tls-crl", city_ca.crl)
    desk = base / "offline"
    desk.mkdir(mode=0o700)
    shutil.move(base / "ch" / "city-root.key", desk / "root.key")
    # the clearinghouse runs, and upgrades its schema, without the root key
    assert "offline" in ok("clearinghouse", "init", "--data-dir", base / "ch")
    assert not (base / "ch" / "city-root.key").exists()
    ok("clearinghouse", "city-secret", "--out", base / "city-secret")
    return base


@pytest.fixture
def bureau(tmp_path: Path, bureau_template: Path) -> tuple[Path, Path]:
    """This test's own copy of the template bureau (its database, keys and their modes;
    the configuration's paths are relative to its folder, or the module CA's):
    (its config, the offline root key file). The city secret is copied alongside."""
    for part in ("ch", "offline"):
        shutil.copytree(bureau_template / part, tmp_path / part)
    shutil.copy2(bureau_template / "city-secret", tmp_path / "city-secret")
    root = tmp_path / "offline" / "root.key"
    assert (root.stat().st_mode & 0o777, root.parent.stat().st_mode & 0o777) == (0o600, 0o700)
    return tmp_path / "ch" / "clearinghouse.toml", root


def prepare_sign_import(config: Path, root: Path, *prepare: str | Path,
                        countersign: Path | None = None) -> str:
    desk = root.parent
    act, signed = desk / f"act-{time.monotonic_ns()}", desk / f"signed-{time.monotonic_ns()}"
    ok("clearinghouse", "prepare", *prepare, "--config", config, "--out", act)
    more = () if countersign is None else ("--new-key", countersign)
    shown = offline_sign(act, root, signed, *more)
    ok("clearinghouse", "import", "--config", config, signed)
    return shown


@contextmanager
def serving(args: list[str | Path], address: str, log: Path, extra: dict[str, str],
            tls: ClientTls) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "city", *map(str, args)],
                                   stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
                                   env=_env(extra))
    try:
        deadline = time.monotonic() + 30
        with tls_channel(address, tls) as ready:
            while True:
                assert process.poll() is None, log.read_text(encoding="utf-8")
                try:
                    grpc.channel_ready_future(ready).result(timeout=0.5)
                    break
                except grpc.FutureTimeoutError:
                    assert time.monotonic() < deadline, log.read_text(encoding="utf-8")
        yield process
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_the_offline_flow_admits_a_district_a_node_then_admits(
        tmp_path: Path, bureau: tuple[Path, Path], city_ca: Authority,
        node_leaf: Issued) -> None:
    config, root = bureau
    ch_dir = config.parent
    city_hex, ch_hex = _key_hex(root), _key_hex(ch_dir / "clearinghouse.key")
    port = free_port()
    secret = tmp_path / "city-secret"  # from `clearinghouse city-secret` (the template)
    node_init(city_ca, node_leaf, tmp_path / "jn", "--clearinghouse", f"127.0.0.1:{port}",
              "--clearinghouse-key", ch_hex, "--city-key", city_hex,
              "--city-secret", secret)
    from node.bootstrap import signing_identity
    from node.config import load_config

    node_key = signing_identity(load_config(tmp_path / "jn" / "node.toml"))[1]

    desk = root.parent
    act, signed = desk / "admit.act", desk / "admit.signed"
    ok("clearinghouse", "prepare", "admit", "--config", config, "--node-id", "320115",
       "--district", "江宁区", "--public-key", node_key, "--out", act)
    assert "准入证书" in act.read_text(encoding="utf-8")
    shown = offline_sign(act, root, signed)
    assert "320115 江宁区" in shown and key_id(bytes.fromhex(node_key)) in shown

    # tampered, or signed by another key: refused, and nothing changes
    text = signed.read_text(encoding="utf-8")
    body = next(line for line in text.splitlines() if line.startswith("body "))[5:]
    raw = bytearray(base64.b64decode(body))
    raw[2] ^= 0x01  # one bit of the node id
    tampered = desk / "tampered.signed"
    tampered.write_text(text.replace(body, base64.b64encode(bytes(raw)).decode()),
                        encoding="utf-8")
    line = refused("clearinghouse", "import", "--config", config, tampered)
    assert "PERMISSION_DENIED" in line and "未做任何更改" in line
    wrong = generate()
    forged = actfile.sign_act(actfile.ActFile("admission", actfile.parse(
        act.read_bytes()).body, key_id(public_key(wrong))), wrong)
    (desk / "forged.signed").write_text(actfile.render(forged), encoding="utf-8")
    line = refused("clearinghouse", "import", "--config", config, desk / "forged.signed")
    assert "PERMISSION_DENIED" in line and "WRONG_KEY" in line
    line = refused("clearinghouse", "import", "--config", config, act)  # never signed
    assert "INVALID_ARGUMENT" in line
    assert nodes(config) == []

    # the offline signer refuses what it cannot parse, and an act for another key
    (desk / "junk").write_text("timebank-city-act v1\nkind admission\nkey 0123456789abcdef\n"
                               "body AAAA\n", encoding="utf-8")
    assert "拒绝签署" in refused("city", "sign", desk / "junk", "--key", root, "--out",
                              desk / "junk.signed", cwd=desk)
    wrong_file = desk / "wrong.key"
    from runtime.keyfiles import write_seed

    write_seed(wrong_file, wrong)
    assert "应由根密钥" in refused("city", "sign", act, "--key", wrong_file, "--out",
                                desk / "w.signed", cwd=desk)
    assert not (desk / "junk.signed").exists() and not (desk / "w.signed").exists()

    ok("clearinghouse", "import", "--config", config, signed)
    prepare_sign_import(config, root, "roster")
    [admitted] = nodes(config)
    assert admitted["node_id"] == "320115"

    # the clearinghouse and the node, as processes: the node admits the district
    reader = observer(city_ca)
    with serving(["clearinghouse", "serve", "--config", config], f"127.0.0.1:{port}",
                 tmp_path / "ch.log", {"TIMEBANK_SERVER_LISTEN": f"127.0.0.1:{port}"},
                 reader):
        node_port = free_port()
        with serving(["node", "serve", "--config", tmp_path / "jn" / "node.toml"],
                     f"127.0.0.1:{node_port}", tmp_path / "jn.log",
                     {"TIMEBANK_SERVER_LISTEN": f"127.0.0.1:{node_port}",
                      "TIMEBANK_SERVER_METRICS_LISTEN": ""}, reader):
            from node.bootstrap import open_app
            from node.usecases import admissions

            app = open_app(load_config(tmp_path / "jn" / "node.toml"))
            try:
                deadline = time.monotonic() + 30
                while app.query(admissions.view).admitted("320115") is None:
                    assert time.monotonic() < deadline, "the node never admitted 320115"
                    time.sleep(0.2)
            finally:
                app.db.dispose()


def test_after_a_city_key_rotation_the_old_key_admits_no_one(
        tmp_path: Path, bureau: tuple[Path, Path], city_ca: Authority) -> None:
    config, old_root = bureau
    desk = old_root.parent
    first = public_key(generate()).hex()
    prepare_sign_import(config, old_root, "admit", "--node-id", "320115", "--district",
                        "江宁区", "--public-key", first)
    new_root = desk / "root2.key"
    printed = ok("city", "keygen", "--out", new_root, cwd=desk)
    new_hex = _key_hex(new_root)
    assert new_hex in printed
    shown = prepare_sign_import(config, old_root, "city-key", "--new-public-key", new_hex,
                                countersign=new_root)
    assert "城市根密钥轮换" in shown and "kept valid: 1" in shown
    assert "countersigned by the new key: 是 yes" in shown

    # an admission signed by the rotated-out key after the rotation: refused
    body = actfile.parse(_prepared(config, desk, "320106", "鼓楼区")).body
    from runtime.keyfiles import read_seed

    late = actfile.sign_act(actfile.ActFile("admission", body,
                                            key_id(public_key(read_seed(old_root)))),
                            read_seed(old_root))
    (desk / "late.signed").write_text(actfile.render(late), encoding="utf-8")
    line = refused("clearinghouse", "import", "--config", config, desk / "late.signed")
    assert "PERMISSION_DENIED" in line and "ROTATED_OUT_CITY_KEY" in line
    assert "已轮换停用" in line
    assert [n["node_id"] for n in nodes(config)] == ["320115"]
    # the offline signer will not sign the new act with the old key either
    (desk / "new.act").write_bytes(_prepared(config, desk, "320106", "鼓楼区"))
    assert "应由根密钥" in refused("city", "sign", desk / "new.act", "--key", old_root,
                                "--out", desk / "x.signed", cwd=desk)
    # the new root key admits; the old admission still stands
    prepare_sign_import(config, new_root, "admit", "--node-id", "320106", "--district",
                        "鼓楼区", "--public-key", public_key(generate()).hex())
    prepare_sign_import(config, new_root, "roster")
    assert [n["node_id"] for n in nodes(config)] == ["320106", "320115"]

    # a reader configured with the first root key follows the chain from what the
    # clearinghouse serves, and refuses the late act even if it were served
    port, reader = free_port(), observer(city_ca)
    with (serving(["clearinghouse", "serve", "--config", config], f"127.0.0.1:{port}",
                  tmp_path / "ch.log", {"TIMEBANK_SERVER_LISTEN": f"127.0.0.1:{port}"},
                  reader),
          tls_channel(f"127.0.0.1:{port}", reader) as channel):
        served = clearing_pb2_grpc.ClearinghouseServiceStub(channel).GetAdmissions(
            pb.GetAdmissionsRequest(), timeout=10)
    from timebank.admissions import AdmissionsError, CityAdmissions, verify_act
    from timebank.envelope import encode

    everything = [*served.certificates, *served.rosters, *served.key_acts]
    assert len(served.key_acts) == 1
    chain = chain_of(bytes.fromhex(_first_root(config)), everything)
    view = CityAdmissions(verify_act(e, chain) for e in everything)
    assert view.admitted("320115") is not None and view.admitted("320106") is not None
    with pytest.raises(AdmissionsError, match="rotated-out"):
        verify_act(encode(late.envelope), chain)


def _prepared(config: Path, desk: Path, node_id: str, district: str) -> bytes:
    out = desk / f"p-{time.monotonic_ns()}"
    ok("clearinghouse", "prepare", "admit", "--config", config, "--node-id", node_id,
       "--district", district, "--public-key", public_key(generate()).hex(), "--out", out)
    return out.read_bytes()


def _first_root(config: Path) -> str:
    from clearinghouse.bootstrap import open_app
    from clearinghouse.config import load_config
    from clearinghouse.usecases.citykeys import META_CITY_PUBLIC_KEY

    app = open_app(load_config(config))
    try:
        found = app.query(lambda tx: tx.repo.meta(META_CITY_PUBLIC_KEY))
    finally:
        app.db.dispose()
    assert found is not None
    return found


def test_a_clearinghouse_key_rotation_signs_later_heads_and_earlier_ones_still_verify(
        tmp_path: Path, bureau: tuple[Path, Path], city_ca: Authority) -> None:
    config, root = bureau
    ch_dir = config.parent
    old_ch = bytes.fromhex(_key_hex(ch_dir / "clearinghouse.key"))
    prepare_sign_import(config, root, "admit", "--node-id", "320115", "--district", "江宁区",
                        "--public-key", public_key(generate()).hex())
    port, reader = free_port(), observer(city_ca)
    address = f"127.0.0.1:{port}"
    with (serving(["clearinghouse", "serve", "--config", config], address,
                  tmp_path / "ch.log", {"TIMEBANK_SERVER_LISTEN": address}, reader),
          tls_channel(address, reader) as channel):
        stub = clearing_pb2_grpc.ClearinghouseServiceStub(channel)
        before = stub.GetTreeHead(pb.GetTreeHeadRequest(), timeout=10).head
        assert transparency.check_head(before.note, old_ch).size == before.size
        desk = root.parent
        act, signed = desk / "rotate.act", desk / "rotate.signed"
        printed = ok("clearinghouse", "prepare", "clearinghouse-key", "--config", config,
                     "--out", act)
        assert "清算中心密钥轮换" in printed
        new_files = sorted(ch_dir.glob("clearinghouse.key.*"))
        assert len(new_files) == 1 and (new_files[0].stat().st_mode & 0o777) == 0o600
        new_ch = bytes.fromhex(_key_hex(new_files[0]))
        # the clearinghouse's word alone cannot rotate its key: the act signed with
        # its own key instead of the city's is refused, and nothing changes
        from runtime.keyfiles import read_seed

        own = read_seed(ch_dir / "clearinghouse.key")
        body = actfile.parse(act.read_bytes()).body
        forged = actfile.sign_act(actfile.ActFile("clearinghouse_key", body,
                                                  key_id(public_key(own))), own)
        (desk / "forged.signed").write_text(actfile.render(forged), encoding="utf-8")
        line = refused("clearinghouse", "import", "--config", config,
                       desk / "forged.signed")
        assert "PERMISSION_DENIED" in line
        offline_sign(act, root, signed)
        ok("clearinghouse", "import", "--config", config, signed)
        # the serving clearinghouse signs the next head (its sweep writes every
        # second) with the new key, under the log's unchanged name
        deadline = time.monotonic() + 20
        while True:
            after = stub.GetTreeHead(pb.GetTreeHeadRequest(), timeout=10).head
            if after.size > before.size:
                break
            assert time.monotonic() < deadline, "no head after the rotation"
            time.sleep(0.2)
        served = stub.GetAdmissions(pb.GetAdmissionsRequest(), timeout=10)
    keys = chain_of(bytes.fromhex(_first_root(config)), list(served.key_acts),
                    clearinghouse=old_ch).log_keys()
    assert keys.keys == (old_ch, new_ch)
    assert transparency.check_head(after.note, keys).size == after.size
    assert transparency.check_head(before.note, keys).size == before.size  # still verifies
    with pytest.raises(transparency.LogError):
        transparency.check_head(after.note, old_ch)  # the old key alone no longer will
    # a restarted clearinghouse serves on with the rotated-in key
    with (serving(["clearinghouse", "serve", "--config", config], address,
                  tmp_path / "ch2.log", {"TIMEBANK_SERVER_LISTEN": address}, reader),
          tls_channel(address, reader) as channel):
        again = clearing_pb2_grpc.ClearinghouseServiceStub(channel).GetTreeHead(
            pb.GetTreeHeadRequest(), timeout=10).head
    assert transparency.check_head(again.note, keys).size >= after.size


def test_every_key_file_others_can_read_is_refused(tmp_path: Path,
                                                   bureau: tuple[Path, Path]) -> None:
    """The offline root key at `city sign`, the root key at a one-step `admit`, the
    clearinghouse key at `serve`, a rotated-in clearinghouse key: one check for all."""
    config, root = bureau
    desk = root.parent
    act = desk / "roster.act"
    ok("clearinghouse", "prepare", "admit", "--config", config, "--node-id", "320115",
       "--district", "江宁区", "--public-key", public_key(generate()).hex(), "--out", act)
    root.chmod(0o644)
    line = refused("city", "sign", act, "--key", root, "--out", desk / "s", cwd=desk)
    assert "密钥文件" in line and "readable by other users" in line
    assert not (desk / "s").exists()
    shutil.copy(root, config.parent / "city-root.key")  # the demo's one-step way
    line = refused("clearinghouse", "admit", "--config", config, "--node-id", "320115",
                   "--district", "江宁区", "--public-key", public_key(generate()).hex())
    assert "readable by other users" in line
    assert nodes(config) == []
    ch_key = config.parent / "clearinghouse.key"
    ch_key.chmod(0o604)
    line = refused("clearinghouse", "serve", "--config", config)
    assert "密钥文件" in line and "readable by other users" in line
    ch_key.chmod(0o600)
    ok("clearinghouse", "prepare", "clearinghouse-key", "--config", config, "--out",
       desk / "rot.act")
    root.chmod(0o600)
    offline_sign(desk / "rot.act", root, desk / "rot.signed")
    ok("clearinghouse", "import", "--config", config, desk / "rot.signed")
    [rotated_in] = config.parent.glob("clearinghouse.key.*")
    rotated_in.chmod(0o620)
    line = refused("clearinghouse", "serve", "--config", config)
    assert "writable by other users" in line


def test_a_node_keeps_witnessing_across_a_clearinghouse_key_rotation(
        tmp_path: Path, bureau: tuple[Path, Path], city_ca: Authority,
        node_leaf: Issued) -> None:
    """A served node learns the new clearinghouse key only from the city-signed rotation
    (its configuration keeps the old one) and cosigns heads the new key signs."""
    config, root = bureau
    ch_dir = config.parent
    old_ch = bytes.fromhex(_key_hex(ch_dir / "clearinghouse.key"))
    port, node_port = free_port(), free_port()
    address = f"127.0.0.1:{port}"
    secret = tmp_path / "city-secret"  # from `clearinghouse city-secret` (the template)
    node_init(city_ca, node_leaf, tmp_path / "jn", "--clearinghouse", address,
              "--clearinghouse-key", old_ch.hex(), "--city-key", _key_hex(root),
              "--city-secret", secret)
    from node.bootstrap import signing_identity
    from node.config import load_config

    node_key = signing_identity(load_config(tmp_path / "jn" / "node.toml"))[1]
    prepare_sign_import(config, root, "admit", "--node-id", "320115", "--district", "江宁区",
                        "--public-key", node_key)
    prepare_sign_import(config, root, "roster")

    def cosigned_head(stub: clearing_pb2_grpc.ClearinghouseServiceStub,
                      at_least: int) -> pb.TreeHead:
        deadline = time.monotonic() + 45
        while True:
            try:
                head = stub.GetTreeHead(pb.GetTreeHeadRequest(cosigned=True), timeout=10).head
                if head.size >= at_least and "320115" in head.cosigners:
                    return head
            except grpc.RpcError as e:
                assert e.code() == grpc.StatusCode.NOT_FOUND, e
            assert time.monotonic() < deadline, f"no head of {at_least} leaves was cosigned"
            time.sleep(0.3)

    reader = observer(city_ca)
    with (serving(["clearinghouse", "serve", "--config", config], address,
                  tmp_path / "ch.log", {"TIMEBANK_SERVER_LISTEN": address}, reader),
          serving(["node", "serve", "--config", tmp_path / "jn" / "node.toml"],
                  f"127.0.0.1:{node_port}", tmp_path / "jn.log",
                  {"TIMEBANK_SERVER_LISTEN": f"127.0.0.1:{node_port}",
                   "TIMEBANK_SERVER_METRICS_LISTEN": ""}, reader),
          tls_channel(address, reader) as channel):
        stub = clearing_pb2_grpc.ClearinghouseServiceStub(channel)
        before = cosigned_head(stub, 1)
        assert transparency.check_head(before.note, old_ch).size == before.size
        act = root.parent / "rotate.act"
        ok("clearinghouse", "prepare", "clearinghouse-key", "--config", config, "--out", act)
        effective = actfile_effective_size(act)
        offline_sign(act, root, root.parent / "rotate.signed")
        ok("clearinghouse", "import", "--config", config, root.parent / "rotate.signed")
        after = cosigned_head(stub, effective)
        served = stub.GetAdmissions(pb.GetAdmissionsRequest(), timeout=10)
    keys = chain_of(bytes.fromhex(_first_root(config)), list(served.key_acts),
                    clearinghouse=old_ch).log_keys()
    assert transparency.check_head(after.note, keys).size == after.size
    with pytest.raises(transparency.LogError):
        transparency.check_head(after.note, old_ch)
    assert "rotated the clearinghouse's key" in (tmp_path / "jn.log").read_text("utf-8")


def actfile_effective_size(act: Path) -> int:
    from timebank.citykeys import read_clearinghouse_rotation

    return read_clearinghouse_rotation(actfile.parse(act.read_bytes()).body).effective_size
