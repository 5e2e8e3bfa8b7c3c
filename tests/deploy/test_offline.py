"""deploy/ checked offline, as far as it can be without a container engine or a cluster:
the compose file against the compose specification's schema, every Kubernetes overlay
built by kustomize and validated strictly against the Kubernetes schemas, the systemd
units by systemd-analyze, the Dockerfile by hadolint. Each check is also shown to catch
a broken file, so none passes for want of looking."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import yaml

from tests.deploy.tools import DEPLOY, run, said, tool

COMPOSE = DEPLOY / "compose" / "compose.yaml"
KUBERNETES = DEPLOY / "kubernetes"
OVERLAYS = sorted(p.name for p in (KUBERNETES / "overlays").iterdir() if p.is_dir())
UNITS = sorted((DEPLOY / "systemd").glob("*.service"))
#: Where the units expect the `timebank` command (the guide installs it there).
UNIT_BINARY = "/opt/timebank/venv/bin/timebank"


# ------------------------------------------------------------------ compose


def _compose_check(path: Path) -> str | None:
    done = run([tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(path)])
    return None if done.returncode == 0 else said(done)


def test_the_compose_file_follows_the_compose_specification() -> None:
    assert _compose_check(COMPOSE) is None


def test_the_compose_city_has_its_parts() -> None:
    services = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))["services"]
    assert services["clearinghouse"]["deploy"]["replicas"] >= 2
    nodes = [name for name in services if name.startswith("node-")]
    assert len(nodes) == 3
    for name in ["clearinghouse", *nodes]:
        assert "healthcheck" in services[name], name
        assert services[name]["depends_on"]["setup"]["condition"] == \
            "service_completed_successfully"
        volumes = services[name]["volumes"]
        assert any(v.startswith("pki:/pki") for v in volumes), name
    for name in nodes:
        assert f"{name}:/var/lib/timebank/{name.removeprefix('node-')}" in \
            services[name]["volumes"]
    assert "pg_isready" in services["postgres"]["healthcheck"]["test"]
    setup = (DEPLOY / "compose" / "setup.sh").read_text(encoding="utf-8")
    for command in ("timebank pki init", "timebank pki issue-server", "timebank pki issue-node",
                    "timebank clearinghouse init", "timebank clearinghouse admit"):
        assert command in setup


def test_the_compose_check_catches_a_broken_file(tmp_path: Path) -> None:
    broken = tmp_path / "compose.yaml"
    broken.write_text(COMPOSE.read_text(encoding="utf-8").replace(
        "    restart: unless-stopped\n", "    restart: [unless-stopped]\n", 1), encoding="utf-8")
    assert _compose_check(broken) is not None


# ------------------------------------------------------------------ Kubernetes


def _build(overlay: Path) -> str:
    done = run([tool("kubectl"), "kustomize", str(overlay)])
    assert done.returncode == 0, said(done)
    return done.stdout


def _validate(manifests: str, tmp_path: Path) -> str | None:
    built = tmp_path / "built.yaml"
    built.write_text(manifests, encoding="utf-8")
    done = run([tool("kubernetes-validate"), "--strict", "--quiet", str(built)])
    return None if done.returncode == 0 else said(done)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_overlay_builds_and_validates_strictly(overlay: str, tmp_path: Path) -> None:
    manifests = _build(KUBERNETES / "overlays" / overlay)
    assert _validate(manifests, tmp_path) is None
    docs = [d for d in yaml.safe_load_all(manifests) if d]
    kinds = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    clearinghouse = kinds[("Deployment", "clearinghouse")]
    node = kinds[("StatefulSet", "node")]
    assert clearinghouse["spec"]["replicas"] >= 2
    assert node["spec"]["volumeClaimTemplates"]
    assert ("Service", "clearinghouse") in kinds and ("Service", "node") in kinds
    for workload in (clearinghouse, node):
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        (container,) = pod["containers"]
        probe = container["readinessProbe"]["exec"]["command"]
        assert probe[:3] == ["python", "-m", "runtime.healthcheck"]
        secrets = {v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}
        assert secrets, "keys come from Secrets"
    assert all(d["metadata"].get("namespace") for d in docs)


def test_the_kubernetes_check_catches_a_broken_manifest(tmp_path: Path) -> None:
    manifests = _build(KUBERNETES / "overlays" / OVERLAYS[0])
    broken = manifests.replace("  replicas: 2\n", "  replicas: 2\n  replicaz: 2\n", 1)
    assert broken != manifests
    assert _validate(broken, tmp_path) is not None


# ------------------------------------------------------------------ systemd


def _verify_units(units: list[Path], tmp_path: Path) -> str | None:
    """``systemd-analyze verify`` checks that ExecStart's binary exists on this machine;
    the units name where the guide installs it, so the copies verified here name this
    virtualenv's `timebank` instead; every other line is verified as written."""
    binary = tool("timebank")
    for unit in units:
        text = unit.read_text(encoding="utf-8")
        assert UNIT_BINARY in text, f"{unit.name} runs {UNIT_BINARY}"
        (tmp_path / unit.name).write_text(text.replace(UNIT_BINARY, binary), encoding="utf-8")
    done = run([tool("systemd-analyze"), "verify", *(str(tmp_path / u.name) for u in units)])
    return None if done.returncode == 0 and not done.stderr.strip() else said(done)


def test_the_systemd_units_verify(tmp_path: Path) -> None:
    assert {u.name for u in UNITS} == {"timebank-node.service", "timebank-clearinghouse.service"}
    assert _verify_units(UNITS, tmp_path) is None


@pytest.mark.parametrize("unit", UNITS, ids=lambda u: u.name)
def test_the_units_are_confined(unit: Path) -> None:
    text = unit.read_text(encoding="utf-8")
    for line in ("User=timebank", "ProtectSystem=strict", "ReadWritePaths=/var/lib/timebank",
                 "NoNewPrivileges=yes", "CapabilityBoundingSet=", "PrivateTmp=yes"):
        assert re.search(rf"^{re.escape(line)}$", text, re.M), line


def test_the_systemd_check_catches_a_broken_unit(tmp_path: Path) -> None:
    broken = tmp_path / "src" / "timebank-node.service"
    broken.parent.mkdir()
    shutil.copy(UNITS[0], broken)
    broken.write_text(broken.read_text(encoding="utf-8").replace(
        "Restart=on-failure", "Restart=sometimes"), encoding="utf-8")
    assert _verify_units([broken], tmp_path) is not None


# ------------------------------------------------------------------ Dockerfile


def _hadolint(path: Path) -> str | None:
    done = run([tool("hadolint"), "--no-color", str(path)])
    return None if done.returncode == 0 else said(done)


def test_the_dockerfile_passes_hadolint() -> None:
    assert _hadolint(DEPLOY / "Dockerfile") is None


def test_the_image_serves_both_roles_as_a_user() -> None:
    text = (DEPLOY / "Dockerfile").read_text(encoding="utf-8")
    assert text.count("FROM python:3.11-slim") == 2  # multi-stage, the pinned base
    assert re.search(r"^USER 10001:10001$", text, re.M)
    assert re.search(r'^ENTRYPOINT \["timebank"\]$', text, re.M)


def test_hadolint_catches_a_broken_dockerfile(tmp_path: Path) -> None:
    broken = tmp_path / "Dockerfile"
    broken.write_text("FROM python\nRUN apt-get install curl\n", encoding="utf-8")
    assert _hadolint(broken) is not None
