"""Figures read at scrape time: a collector that fails or hangs (its database away)
leaves its figures out and is counted, and the rest of the scrape still answers."""

from __future__ import annotations

import threading
from collections.abc import Iterator

from prometheus_client import REGISTRY
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from runtime.metrics import scrape_registry


class Figures:
    """Yields one gauge; fails while ``broken``, waits while ``held`` is clear."""

    def __init__(self) -> None:
        self.broken = False
        self.held = threading.Event()
        self.held.set()

    def collect(self) -> Iterator[Metric]:
        self.held.wait()
        if self.broken:
            raise ConnectionError("the database is away")
        yield GaugeMetricFamily("timebank_probe_figure", "a figure", value=7)


def _errors() -> float:
    return REGISTRY.get_sample_value("timebank_scrape_errors_total") or 0.0


def test_a_failing_or_hanging_collector_is_left_out_and_counted() -> None:
    figures = Figures()
    registry = scrape_registry([figures], timeout=0.5)
    assert registry.get_sample_value("timebank_probe_figure") == 7
    assert registry.get_sample_value("python_info") is not None or \
        registry.get_sample_value("process_cpu_seconds_total") is not None
    before = _errors()
    figures.broken = True
    assert registry.get_sample_value("timebank_probe_figure") is None
    assert _errors() == before + 1
    figures.broken = False
    figures.held.clear()  # a read that does not come back
    assert registry.get_sample_value("timebank_probe_figure") is None
    assert registry.get_sample_value("timebank_probe_figure") is None  # skipped: still busy
    assert _errors() == before + 3
    figures.held.set()
    for _ in range(100):  # the overrunning read ends; then figures come back
        if registry.get_sample_value("timebank_probe_figure") == 7:
            break
        threading.Event().wait(0.05)
    assert registry.get_sample_value("timebank_probe_figure") == 7
