"""Scraping a process's Prometheus metrics listener and reading samples out of it.

The text is parsed with prometheus_client's own parser, so label values holding "}", ","
or escaped quotes (endpoint templates such as /rooms/{roomId}/send/...) read back exactly.
"""

from __future__ import annotations

import urllib.request

import attrs
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample


@attrs.frozen
class Metrics:
    """Every sample of one scrape, in exposition order."""

    samples: tuple[Sample, ...]

    def matching(self, name: str, **labels: str) -> list[Sample]:
        """The samples called `name` (e.g. "x_total", "x_bucket") whose labels include `labels`."""
        return [
            s
            for s in self.samples
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
        ]

    def first(self, name: str, **labels: str) -> float | None:
        """The value of the first matching sample, or None if there is none."""
        found = self.matching(name, **labels)
        return found[0].value if found else None

    def total(self, name: str, **labels: str) -> float:
        """The sum of the matching samples' values (0 if there are none)."""
        return sum(s.value for s in self.matching(name, **labels))


def parse(text: str) -> Metrics:
    return Metrics(
        tuple(s for family in text_string_to_metric_families(text) for s in family.samples)
    )


def scrape(metrics_base_url: str, timeout: float = 10.0) -> Metrics:
    """GET `metrics_base_url`/metrics (a process's metrics_listen) and parse it."""
    with urllib.request.urlopen(metrics_base_url.rstrip("/") + "/metrics", timeout=timeout) as r:
        return parse(r.read().decode())
