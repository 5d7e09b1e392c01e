"""Prometheus exposition for one process: every series carries the worker's name.

Metrics are declared at module level on the default registry; the exposition adds a
`worker` label to every sample, so that processes scraped side by side stay apart even
without relabelling in Prometheus.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Histogram
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from prometheus_client.twisted import MetricsResource
from twisted.web.resource import Resource

REACTOR_TICK = Histogram(
    "ganglion_reactor_tick_seconds",
    "Time the reactor spends running due callbacks in one iteration",
    buckets=(0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)


class WorkerLabelCollector(Collector):
    """Re-emits every sample of the default registry with worker=<name> added."""

    def __init__(self, worker: str) -> None:
        self.worker = worker

    def collect(self) -> Iterator[Metric]:
        for family in REGISTRY.collect():
            out = Metric(family.name, family.documentation, family.type, family.unit)
            for s in family.samples:
                labels = dict(s.labels)
                labels["worker"] = self.worker
                out.add_sample(s.name, labels, s.value, s.timestamp, s.exemplar)
            yield out


def metrics_resource(worker: str) -> Resource:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(WorkerLabelCollector(worker))
    root = Resource()
    root.putChild(b"metrics", MetricsResource(registry=registry))  # type: ignore[arg-type]
    return root


def instrument_reactor(reactor: Any) -> None:
    """Times each pass of the reactor over its due calls (a tick)."""
    original = reactor.runUntilCurrent
    if getattr(original, "_ganglion_instrumented", False):
        return

    def timed_run_until_current() -> None:
        start = time.perf_counter()
        try:
            original()
        finally:
            REACTOR_TICK.observe(time.perf_counter() - start)

    timed_run_until_current._ganglion_instrumented = True  # type: ignore[attr-defined]
    reactor.runUntilCurrent = timed_run_until_current
