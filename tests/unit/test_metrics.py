"""WorkerLabelCollector: every exposed sample carries the worker's name."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from homeserver.metrics import WorkerLabelCollector, instrument_reactor


@pytest.fixture
def sample_metrics() -> Iterator[tuple[Counter, Gauge, Histogram]]:
    counter = Counter("test_metrics_things", "Things", ["kind"])
    gauge = Gauge("test_metrics_level", "Level")
    hist = Histogram("test_metrics_latency_seconds", "Latency", ["op"], buckets=(0.1, 1.0))
    try:
        yield counter, gauge, hist
    finally:
        for m in (counter, gauge, hist):
            REGISTRY.unregister(m)


def _families(worker: str) -> dict[str, Any]:
    return {f.name: f for f in WorkerLabelCollector(worker).collect()}


def test_every_sample_of_the_default_registry_gets_the_worker_label(
    sample_metrics: tuple[Counter, Gauge, Histogram],
) -> None:
    counter, gauge, hist = sample_metrics
    counter.labels("a").inc(3)
    gauge.set(7)
    hist.labels("get").observe(0.5)
    families = list(WorkerLabelCollector("sync1").collect())
    original = list(REGISTRY.collect())
    assert [f.name for f in families] == [f.name for f in original]
    total = 0
    for fam, orig in zip(families, original, strict=True):
        assert (fam.type, fam.documentation, fam.unit) == (orig.type, orig.documentation, orig.unit)
        assert len(fam.samples) == len(orig.samples), fam.name
        for s, o in zip(fam.samples, orig.samples, strict=True):
            assert s.labels == {**o.labels, "worker": "sync1"}
            assert s.name == o.name
            if fam.name.startswith("test_metrics_"):  # process metrics move between collects
                assert s.value == o.value
            total += 1
    assert total > 0


def test_values_and_existing_labels_are_kept(
    sample_metrics: tuple[Counter, Gauge, Histogram],
) -> None:
    counter, gauge, hist = sample_metrics
    counter.labels("a").inc(3)
    counter.labels("b").inc()
    gauge.set(7)
    hist.labels("get").observe(0.5)
    fams = _families("main")

    things = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for s in fams["test_metrics_things"].samples
    }
    assert things[("test_metrics_things_total", (("kind", "a"), ("worker", "main")))] == 3
    assert things[("test_metrics_things_total", (("kind", "b"), ("worker", "main")))] == 1

    (level,) = fams["test_metrics_level"].samples
    assert (level.value, level.labels) == (7, {"worker": "main"})

    buckets = {
        s.labels["le"]: s.value
        for s in fams["test_metrics_latency_seconds"].samples
        if s.name.endswith("_bucket")
    }
    assert buckets == {"0.1": 0, "1.0": 1, "+Inf": 1}
    assert fams["test_metrics_latency_seconds"].type == "histogram"


def test_exposition_text_has_worker_on_every_line(
    sample_metrics: tuple[Counter, Gauge, Histogram],
) -> None:
    counter, _, _ = sample_metrics
    counter.labels("a").inc()
    registry = CollectorRegistry(auto_describe=False)
    registry.register(WorkerLabelCollector("sync-2"))
    text = generate_latest(registry).decode()
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert lines
    for line in lines:
        assert 'worker="sync-2"' in line, line
    assert 'test_metrics_things_total{kind="a",worker="sync-2"} 1.0' in text
    # And it parses back.
    parsed = {f.name: f for f in text_string_to_metric_families(text)}
    assert parsed["test_metrics_things"].type == "counter"


def test_two_workers_stay_apart(sample_metrics: tuple[Counter, Gauge, Histogram]) -> None:
    _, gauge, _ = sample_metrics
    gauge.set(1)
    (a,) = _families("a")["test_metrics_level"].samples
    (b,) = _families("b")["test_metrics_level"].samples
    assert a.labels["worker"] == "a"
    assert b.labels["worker"] == "b"


def test_collect_reflects_current_values(sample_metrics: tuple[Counter, Gauge, Histogram]) -> None:
    _, gauge, _ = sample_metrics
    collector = WorkerLabelCollector("w")
    gauge.set(1)
    first = {f.name: f for f in collector.collect()}["test_metrics_level"].samples[0].value
    gauge.set(2)
    second = {f.name: f for f in collector.collect()}["test_metrics_level"].samples[0].value
    assert (first, second) == (1, 2)


class FakeReactor:
    def __init__(self, fail: bool = False) -> None:
        self.runs = 0
        self.fail = fail

    def runUntilCurrent(self) -> None:  # noqa: N802 (Twisted's name)
        self.runs += 1
        if self.fail:
            raise RuntimeError("callback blew up")


def _ticks() -> float:
    value = REGISTRY.get_sample_value("ganglion_reactor_tick_seconds_count")
    return value or 0.0


def test_instrument_reactor_times_each_tick_once() -> None:
    reactor = FakeReactor()
    instrument_reactor(reactor)
    instrument_reactor(reactor)  # idempotent: not wrapped twice
    before = _ticks()
    reactor.runUntilCurrent()
    assert reactor.runs == 1
    assert _ticks() == before + 1


def test_instrument_reactor_observes_failing_ticks() -> None:
    reactor = FakeReactor(fail=True)
    instrument_reactor(reactor)
    before = _ticks()
    with pytest.raises(RuntimeError):
        reactor.runUntilCurrent()
    assert _ticks() == before + 1
