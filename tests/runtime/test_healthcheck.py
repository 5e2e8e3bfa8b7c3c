"""``python -m runtime.healthcheck``: the probe the image, compose and Kubernetes run,
against a real server serving TLS (mutual, as the clearinghouse does)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from grpc_health.v1 import health_pb2

from city.pki.store import Authority
from runtime import healthcheck
from runtime.observe import CallObserver
from runtime.rpcstatus import ErrorMapping
from runtime.server import RunningServer, start_server
from tests.pki import OBSERVER, SERVER, client_tls, issue, server_tls
from tests.runtime.test_observe import METRICS, SERVICE


@pytest.fixture
def mutual(city_ca: Authority) -> Iterator[RunningServer]:
    running = start_server(SERVICE, lambda s: None, CallObserver(METRICS, ErrorMapping("probe")),
                           "127.0.0.1:0", max_message_bytes=4096, workers=2,
                           thread_name_prefix="probe",
                           tls=server_tls(city_ca, issue(city_ca, SERVER, "clearinghouse")))
    yield running
    running.stop(None)


def test_serving_over_mutual_tls_exits_0(mutual: RunningServer, city_ca: Authority) -> None:
    observer = issue(city_ca, OBSERVER, "probe")
    assert healthcheck.main([f"127.0.0.1:{mutual.port}", "--ca", str(city_ca.ca_cert),
                             "--cert", str(observer.cert), "--key", str(observer.key)]) == 0
    assert healthcheck.check(f"127.0.0.1:{mutual.port}", client_tls(city_ca, observer),
                             SERVICE) is None


def test_not_serving_and_unknown_services_exit_1(
        mutual: RunningServer, city_ca: Authority, capsys: pytest.CaptureFixture[str]) -> None:
    observer = issue(city_ca, OBSERVER, "probe")
    tls = client_tls(city_ca, observer)
    mutual.health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    assert healthcheck.check(f"127.0.0.1:{mutual.port}", tls) == \
        f"127.0.0.1:{mutual.port} service '': NOT_SERVING"
    assert "NOT_FOUND" in (healthcheck.check(f"127.0.0.1:{mutual.port}", tls, "nope") or "")
    assert healthcheck.main([f"127.0.0.1:{mutual.port}", "--ca", str(city_ca.ca_cert),
                             "--cert", str(observer.cert), "--key", str(observer.key)]) == 1
    assert "not serving" in capsys.readouterr().err


def test_without_a_client_certificate_the_mutual_server_is_not_healthy(
        mutual: RunningServer, city_ca: Authority) -> None:
    why = healthcheck.check(f"127.0.0.1:{mutual.port}", client_tls(city_ca), timeout=5)
    assert why is not None and why.startswith(f"127.0.0.1:{mutual.port}: UNAVAILABLE")


def test_without_a_ca_it_says_what_to_give(capsys: pytest.CaptureFixture[str],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TIMEBANK_CA", raising=False)
    assert healthcheck.main(["127.0.0.1:1"]) == 2
    assert "TIMEBANK_CA" in capsys.readouterr().err
